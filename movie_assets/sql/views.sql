-- Everyday questions of the original design, answered by views the platform keeps up to date.
-- {schema} is replaced by MOVIE_DB_SCHEMA (quoted).

-- Movies released after a date:  select * from movies_released_after('2024-06-01');
create or replace function {schema}.movies_released_after(after date)
returns setof {schema}.movies_clean
language sql stable as $$
    select * from {schema}.movies_clean where release_date > after order by release_date, movie_id
$$;

-- Complete rows only: no missing value in any column the rating model uses.
create or replace view {schema}.movies_complete as
select * from {schema}.movies_clean
where runtime is not null and budget is not null and revenue is not null
  and vote_average is not null and vote_count is not null and popularity is not null
  and original_language is not null and cardinality(genre_ids) > 0;

-- Per-month EDA comparison between the latest two materializations of each month.
create or replace view {schema}.eda_month_comparison as
with ranked as (
    select h.*, dense_rank() over (partition by release_month order by computed_at desc, run_id) as materialization
    from {schema}.eda_stats_history h
)
select latest.release_month, latest.column_name, latest.stat, latest.label,
       previous.value as previous_value, latest.value as latest_value,
       latest.value - previous.value as change,
       previous.run_id as previous_run_id, latest.run_id as latest_run_id
from ranked latest
left join ranked previous
  on previous.release_month = latest.release_month and previous.materialization = 2
 and previous.column_name = latest.column_name and previous.stat = latest.stat
 and previous.label is not distinct from latest.label
where latest.materialization = 1;

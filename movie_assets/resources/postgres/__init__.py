"""PostgreSQL, the structured-data hub, split along its seams (imports point down this list):

- `errors.py`: `PostgresError`; `arrow_copy.py`: frames to COPY and Arrow back to frames;
- `schema.py`: DDL on first write, columns added later, what the catalog says exists;
- `database.py`: the `PostgresDatabase` resource: connections, atomic window writes, reads;
- `io_manager.py`: `PostgresIOManager` and the table metadata of a write.
"""

from movie_assets.resources.postgres.arrow_copy import copy_frame
from movie_assets.resources.postgres.database import PostgresDatabase, TableRows, WithSideTables
from movie_assets.resources.postgres.errors import PostgresError
from movie_assets.resources.postgres.io_manager import PostgresIOManager, table_metadata
from movie_assets.resources.postgres.schema import columns_of, existing_tables, stored_column_types, table_schema

__all__ = [
    "PostgresDatabase",
    "PostgresError",
    "PostgresIOManager",
    "TableRows",
    "WithSideTables",
    "columns_of",
    "copy_frame",
    "existing_tables",
    "stored_column_types",
    "table_metadata",
    "table_schema",
]

"""A failed run reaches the Slack-compatible webhook, with partition and error, and no secret."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg

from movie_assets.automation.sensors import alert_on_run_failure


@dg.op
def crawl_fails():
    raise RuntimeError("TMDB refused postgresql://movie:hunter2@db/movies")


@dg.job
def failing_job():
    crawl_fails()


def test_failed_run_posts_an_alert(monkeypatch):
    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_address[1]}/hook")
    try:
        instance = dg.DagsterInstance.ephemeral()
        result = failing_job.execute_in_process(
            instance=instance, raise_on_error=False, tags={"dagster/partition": "2024-03-01"}
        )
        failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
        context = dg.build_run_status_sensor_context(
            sensor_name="alert_on_run_failure",
            dagster_event=failure,
            dagster_instance=instance,
            dagster_run=result.dagster_run,
        ).for_run_failure()
        alert_on_run_failure(context)
    finally:
        server.shutdown()
    assert len(received) == 1
    text = received[0]["text"]
    assert "failing_job" in text and "2024-03-01" in text and "failed" in text
    assert "TMDB refused" in text, "the step's own error, not only 'steps failed'"
    assert f"/runs/{result.run_id}" in text
    assert "hunter2" not in text

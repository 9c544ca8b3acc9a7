"""A client for the visrec HTTP API and the ``visrec`` console command (bulk ingest and more).

It speaks to the service only over HTTP and needs nothing of the server's code: requests and
tqdm are its whole world, so a shop engineer can install it alone (see pyproject.toml).
"""

from visrec_client.api import FINISHED_JOB_STATUSES, ApiCallError, ApiClient

__all__ = ["FINISHED_JOB_STATUSES", "ApiCallError", "ApiClient"]

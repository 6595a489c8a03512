"""A typed client for the collector's HTTP API, on the models the API itself serves.

    from gradwatch.client import Client

    with Client("http://collector:8000") as gw:
        for alert in gw.alerts(run="my-run", state="firing").alerts:
            print(alert.id, alert.rule, alert.message)
        gw.ack(alert.id)
        for alert in gw.stream():  # every change, resumed after a disconnect or a restart
            print(alert.seq, alert.state, alert.rule)

Needs httpx and pydantic only (``pip install 'gradwatch[client]'``); never imports the server
side (fastapi, uvicorn, zmq) or torch.
"""

from gradwatch.collector.alert import Alert
from gradwatch.collector.run_record import RankSummary
from gradwatch.collector.schemas import AlertList, RunDetail, RunList

from .client import ApiError, Client, ClientError, Unreachable
from .config import ClientConfig

__all__ = [
    "Alert",
    "AlertList",
    "ApiError",
    "Client",
    "ClientConfig",
    "ClientError",
    "RankSummary",
    "RunDetail",
    "RunList",
    "Unreachable",
]

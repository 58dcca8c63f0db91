"""The rules every solrl gRPC service follows, in one place: bind to loopback by default; bound
anywhere else, refuse to start without a token and TLS; check the bearer token in constant time
on every call but health checks; clients send the token and trust a given root certificate."""

from __future__ import annotations

import hmac
import ipaddress
import pathlib
from collections.abc import Callable, Sequence
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

_HEALTH_PREFIX = "/grpc.health.v1.Health/"


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (localhost, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bearer(value: str) -> bytes:
    """'Bearer <token>' -> b'bearer <token>' (the scheme is case-insensitive, the token exact)."""
    scheme, _, token = value.partition(" ")
    return b"bearer " + token.encode() if scheme.lower() == "bearer" else b""


class TokenCheck(grpc.ServerInterceptor):
    """Rejects calls without the bearer token (health checks excepted, so probes need no secret)."""

    def __init__(self, token: str):
        self.expected = b"bearer " + token.encode()

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token: send metadata 'authorization: Bearer <token>'")

        self.deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith(_HEALTH_PREFIX):
            return continuation(handler_call_details)
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization" and hmac.compare_digest(_bearer(value), self.expected):
                return continuation(handler_call_details)
        return self.deny


class SecureServer:
    """A started gRPC server with health checks, bound under the rules above. `add(server)`
    registers the service's servicers; `services` are the names reported SERVING."""

    def __init__(
        self,
        what: str,
        add: Callable[[grpc.Server], None],
        services: Sequence[str],
        host: str,
        port: int,
        token: str | None,
        tls_cert: str | None,
        tls_key: str | None,
        token_hint: str,
        workers: int = 4,
        options: Sequence[tuple[str, int]] = (),
    ):
        if not is_loopback(host) and not (token and tls_cert):
            raise ValueError(f"{what} bound to {host!r} needs a token and TLS: {token_hint} and pass --tls-cert/--tls-key, or bind to 127.0.0.1")
        if bool(tls_cert) != bool(tls_key):
            raise ValueError("--tls-cert and --tls-key go together: pass the PEM certificate and its private key")
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), interceptors=[TokenCheck(token)] if token else [], options=list(options))
        add(self.server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if tls_cert:
            credentials = grpc.ssl_server_credentials([(pathlib.Path(tls_key).read_bytes(), pathlib.Path(tls_cert).read_bytes())])
            self.port = self.server.add_secure_port(f"{host}:{port}", credentials)
        else:
            self.port = self.server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"could not bind the {what} to {host}:{port}; is the port free?")
        self.address = f"{host}:{self.port}"
        self.tls = bool(tls_cert)
        self.server.start()
        for service in ("", *services):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float | None = 1.0) -> None:
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()

    def wait(self) -> None:
        self.server.wait_for_termination()


def client_channel(address: str, tls_root_cert: str | None = None, options: Sequence[tuple[str, int]] = ()) -> grpc.Channel:
    """A channel to a solrl service: TLS trusting `tls_root_cert` (PEM of the server's certificate
    or its CA) when given, else plaintext (loopback services)."""
    if tls_root_cert:
        credentials = grpc.ssl_channel_credentials(root_certificates=pathlib.Path(tls_root_cert).read_bytes())
        return grpc.secure_channel(address, credentials, options=list(options))
    return grpc.insecure_channel(address, options=list(options))


def bearer(token: str | None) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying `token`, or none."""
    return (("authorization", f"Bearer {token}"),) if token else ()

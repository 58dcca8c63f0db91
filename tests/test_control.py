"""The control service on its own (real gRPC server and client, the driver's side played by a
thread that takes requests as the driver's loop does): the token is required, Scale answers once
the driver applied it, or as pending while the driver is busy elsewhere, and refuses what cannot
be applied at once; Checkpoint likewise; Stop sets the flag; binding off loopback without TLS is
refused before anything listens."""

import threading

import grpc
import pytest

from solrl.cluster.control import Control, ControlClient, ControlServer, parse_announcement
from solrl.cluster.v1 import control_pb2

TOKEN = "s3cret"


@pytest.fixture
def served():
    control = Control()
    server = ControlServer(control, "127.0.0.1", 0, TOKEN, None, None, "127.0.0.1")
    done = threading.Event()
    sizes = {"rollout": 2}

    def scale(pool: str, size: int) -> None:
        if pool not in sizes:
            raise ValueError(f"pool {pool!r} is unknown; use one of ['rollout']")
        sizes[pool] = size

    def driver_loop():  # what Driver._pump does between tasks
        while not done.wait(0.02):
            control.answer(scale)
            if control.checkpoints:
                control.checkpointed("/runs/x/checkpoints/step-000003", 3)

    thread = threading.Thread(target=driver_loop)
    thread.start()
    yield control, server, sizes
    done.set()
    thread.join()
    server.stop()


def test_calls_need_the_token(served):
    _, server, _ = served
    for token in ("", "wrong", "Bearer " + TOKEN):
        with pytest.raises(grpc.RpcError) as err:
            ControlClient(server.address, token=token, timeout_s=5).status()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_scale_checkpoint_status_and_stop(served):
    control, server, sizes = served
    client = ControlClient(server.address, token=TOKEN, timeout_s=10)
    reply = client.scale("rollout", 5)
    assert (reply.size, reply.applied) == (5, True) and sizes["rollout"] == 5
    for pool, size, why in (("learner", 2, "pool 'learner' is unknown"), ("rollout", 0, "needs at least 1 worker")):
        with pytest.raises(grpc.RpcError) as err:
            client.scale(pool, size)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and why in err.value.details()
    reply = client.checkpoint()
    assert (reply.path, reply.iteration, reply.written) == ("/runs/x/checkpoints/step-000003", 3, True)
    control.publish(control_pb2.RunStatus(state="running", iteration=3, iterations=10, out="/runs/x"))
    status = client.status()
    assert (status.state, status.iteration, status.out) == ("running", 3, "/runs/x")
    assert not control.stop_requested.is_set()
    assert client.stop() == "stopping" and control.stop_requested.is_set()


def test_requests_are_answered_while_the_driver_is_busy_and_shown_pending():
    """No driver loop takes requests (the run is starting its workers, or evaluating): Scale and
    Checkpoint are still answered, as accepted and pending, and GetStatus lists them until the
    driver applies them."""
    control = Control()
    server = ControlServer(control, "127.0.0.1", 0, TOKEN, None, None, "127.0.0.1")
    try:
        client = ControlClient(server.address, token=TOKEN, timeout_s=10)
        scaled, checkpoint = client.scale("rollout", 3), client.checkpoint()
        assert (scaled.size, scaled.applied) == (3, False) and not checkpoint.written and checkpoint.path == ""
        assert list(client.status().pending) == ["scale rollout to 3", "checkpoint"]
        sizes = {}
        control.answer(lambda pool, size: sizes.update({pool: size}))  # the driver gets to them
        assert sizes == {"rollout": 3} and list(client.status().pending) == ["checkpoint"]
        control.checkpointed("/runs/x/checkpoints/step-000001", 1)
        assert list(client.status().pending) == []
    finally:
        server.stop()


def test_a_request_left_when_the_run_ends_fails_cleanly():
    control = Control()
    server = ControlServer(control, "127.0.0.1", 0, TOKEN, None, None, "127.0.0.1")
    try:
        client = ControlClient(server.address, token=TOKEN, timeout_s=10)
        threading.Timer(0.3, lambda: control.close("the run has ended")).start()
        with pytest.raises(grpc.RpcError) as err:
            client.scale("rollout", 3)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "the run has ended" in err.value.details()
    finally:
        server.stop()


def test_off_loopback_needs_tls_and_a_token_is_always_needed():
    with pytest.raises(ValueError, match="control service bound to '0.0.0.0' needs a token and TLS"):
        ControlServer(Control(), "0.0.0.0", 0, TOKEN, None, None, "10.0.0.1")
    with pytest.raises(ValueError, match="needs a token: set SOLRL_CONTROL_TOKEN"):
        ControlServer(Control(), "127.0.0.1", 0, None, None, None, "127.0.0.1")


def test_the_announcement_is_found_in_a_log():
    server = ControlServer(Control(), "127.0.0.1", 0, TOKEN, None, None, "127.0.0.1")
    try:
        log = f"starting\n{server.announcement}\niter 1/3 ...\n"
        assert parse_announcement(log) == {"address": server.address, "tls": False}
        assert parse_announcement("no endpoint here\n") is None
    finally:
        server.stop()


def test_generated_code_matches_proto(tmp_path):
    import pathlib

    from grpc_tools import protoc

    root = pathlib.Path(__file__).resolve().parents[1]
    proto = root / "protos/solrl/cluster/v1/control.proto"
    assert protoc.main(["protoc", f"-I{root / 'protos'}", f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}", str(proto)]) == 0
    for name in ("control_pb2.py", "control_pb2_grpc.py"):
        assert (tmp_path / "solrl/cluster/v1" / name).read_text() == (root / "solrl/cluster/v1" / name).read_text(), f"regenerate {name} (protos/README.md)"

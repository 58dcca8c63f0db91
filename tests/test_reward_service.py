"""The reward service against real gRPC servers on loopback: scores equal the local reward's,
health and info answer, malformed / oversized / unauthenticated requests get clear statuses and
are not retried, a slow server trips the deadline, a killed server is retried until it is back,
and a Sol-RL iteration runs with its reward served remotely."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from solrl.config import ConfigError, load_config
from solrl.grpc_auth import is_loopback
from solrl.rewards.remote import RemoteReward, RemoteRewardError
from solrl.rewards.service import SERVICE, RewardServer
from solrl.rewards.shapes import ShapesReward
from solrl.rewards.v1 import reward_pb2, reward_pb2_grpc
from solrl.rewards.wire import encode_images
from solrl.toy.captions import load_prompts, parse_caption
from solrl.toy.render import render_batch

CAPTIONS = load_prompts("eval")[:12]


def shapes_images(captions=CAPTIONS, seed=0):
    images = render_batch([parse_caption(c) for c in captions], seed)
    return (images * 255).round() / 255  # what survives 8-bit transport


@pytest.fixture
def server():
    s = RewardServer(ShapesReward(), "shapes", port=0, max_batch=16, max_request_bytes=256 * 1024)
    yield s
    s.stop(0)


def stub(address):
    return reward_pb2_grpc.RewardServiceStub(grpc.insecure_channel(address))


@pytest.mark.parametrize("encoding", ["raw", "png"])
def test_remote_scores_equal_local(server, encoding):
    images = shapes_images()
    remote = RemoteReward(server.address, encoding=encoding, batch_size=5)  # 3 requests
    expected = ShapesReward()(images, CAPTIONS)
    torch.testing.assert_close(remote(images, CAPTIONS), expected)
    assert expected.mean() > 0.9  # faithful renders of their captions
    assert remote.info().reward == "shapes" and remote.info().max_batch == 16


def test_health_service(server):
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.address))
    for service in ("", SERVICE):
        assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == health_pb2.HealthCheckResponse.SERVING


def _status(call):
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_malformed_and_oversized_requests(server):
    s, img = stub(server.address), shapes_images(CAPTIONS[:2])
    good = encode_images(img)
    code, details = _status(lambda: s.Score(reward_pb2.ScoreRequest(images=good, prompts=CAPTIONS[:1]), timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "2 images but 1 prompts" in details
    bad_png = [reward_pb2.Image(png=b"\x89PNG\r\n\x1a\nnot really")]
    code, details = _status(lambda: s.Score(reward_pb2.ScoreRequest(images=bad_png, prompts=CAPTIONS[:1]), timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "image 0: not a decodable PNG" in details
    short = [reward_pb2.Image(raw=reward_pb2.RawImage(height=32, width=32, rgb=b"\x00" * 100))]
    code, details = _status(lambda: s.Score(reward_pb2.ScoreRequest(images=short, prompts=CAPTIONS[:1]), timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "expected 32x32x3" in details
    huge_side = [reward_pb2.Image(raw=reward_pb2.RawImage(height=5000, width=1, rgb=b"\x00" * 15000))]
    code, details = _status(lambda: s.Score(reward_pb2.ScoreRequest(images=huge_side, prompts=CAPTIONS[:1]), timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "outside 1..4096" in details
    many = encode_images(shapes_images(CAPTIONS + CAPTIONS[:5]))
    code, details = _status(lambda: s.Score(reward_pb2.ScoreRequest(images=many, prompts=CAPTIONS + CAPTIONS[:5]), timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "max_batch=16" in details
    big = [reward_pb2.Image(raw=reward_pb2.RawImage(height=512, width=512, rgb=b"\x00" * (512 * 512 * 3)))]
    code, _ = _status(lambda: s.Score(reward_pb2.ScoreRequest(images=big, prompts=CAPTIONS[:1]), timeout=5))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    # the client does not retry a request the server rejected
    remote = RemoteReward(server.address, retries=5, backoff_s=10)
    start = time.perf_counter()
    with pytest.raises(RemoteRewardError, match="RESOURCE_EXHAUSTED"):
        remote(torch.zeros(1, 3, 512, 512), CAPTIONS[:1])
    assert time.perf_counter() - start < 5


class SlowReward:
    calls = 0

    def __call__(self, images, prompts):
        self.calls += 1
        time.sleep(1.5)
        return torch.zeros(len(images))


def test_slow_server_trips_the_deadline_and_is_not_sent_the_request_again():
    reward = SlowReward()
    server = RewardServer(reward, "slow", port=0)
    try:
        images = shapes_images(CAPTIONS[:2])
        with pytest.raises(RemoteRewardError, match="within timeout_s=0.3; not resent"):
            RemoteReward(server.address, timeout_s=0.3, retries=3, backoff_s=0.05)(images, CAPTIONS[:2])
        time.sleep(1.5)  # long enough for any resend to have reached the server
        assert server.servicer.requests == 1 and reward.calls == 1
        lenient = RemoteReward(server.address, timeout_s=0.3, retries=0, on_failure="nan")
        scores = lenient(images, CAPTIONS[:2])
        assert torch.isnan(scores).all() and lenient.failed == 2
        assert torch.equal(RemoteReward(server.address, timeout_s=10)(images, CAPTIONS[:2]), torch.zeros(2))
    finally:
        server.stop(0)


def _serve_subprocess(port: int = 0, env=None):
    proc = subprocess.Popen(
        [sys.executable, "-m", "solrl.cli", "reward", "serve", "--reward", "shapes", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(f"server did not start: {proc.stderr.read()}")
    return proc, json.loads(line)["address"]


def test_killed_server_is_retried_until_back():
    proc, address = _serve_subprocess()
    images = shapes_images(CAPTIONS[:3])
    remote = RemoteReward(address, timeout_s=5, retries=1, backoff_s=0.1)
    expected = remote(images, CAPTIONS[:3])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with pytest.raises(RemoteRewardError, match="UNAVAILABLE"):
        remote(images, CAPTIONS[:3])
    # the server comes back on the same port while a patient client is retrying
    port = int(address.rsplit(":", 1)[1])
    restarted = {}
    threading.Timer(0.5, lambda: restarted.update(proc=_serve_subprocess(port)[0])).start()
    try:
        patient = RemoteReward(address, timeout_s=5, retries=8, backoff_s=0.5)
        torch.testing.assert_close(patient(images, CAPTIONS[:3]), expected)
    finally:
        for _ in range(100):
            if "proc" in restarted:
                break
            time.sleep(0.2)
        restarted["proc"].terminate()
        restarted["proc"].wait(timeout=30)


def test_token_required_off_loopback_and_enforced():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")
    with pytest.raises(ValueError, match="needs a token and TLS"):
        RewardServer(ShapesReward(), "shapes", host="0.0.0.0", port=0)
    with pytest.raises(ValueError, match="needs a token and TLS"):
        RewardServer(ShapesReward(), "shapes", host="0.0.0.0", port=0, token="s3cret")  # a token alone travels in clear
    server = RewardServer(ShapesReward(), "shapes", port=0, token="s3cret")
    try:
        images = shapes_images(CAPTIONS[:2])
        with pytest.raises(RemoteRewardError, match="UNAUTHENTICATED"):
            RemoteReward(server.address, token="", retries=3, backoff_s=10)(images, CAPTIONS[:2])
        with pytest.raises(RemoteRewardError, match="UNAUTHENTICATED"):
            RemoteReward(server.address, token="wrong")(images, CAPTIONS[:2])
        assert len(RemoteReward(server.address, token="s3cret")(images, CAPTIONS[:2])) == 2
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.address))
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(0)
    env = {**os.environ}
    env.pop("SOLRL_REWARD_TOKEN", None)
    out = subprocess.run([sys.executable, "-m", "solrl.cli", "reward", "serve", "--reward", "shapes", "--host", "0.0.0.0", "--port", "0"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2 and "SOLRL_REWARD_TOKEN" in out.stderr


def test_sol_rl_iteration_with_remote_reward(server, tmp_path):
    from solrl.local_run import LocalRun

    config = load_config(overrides=[
        f"reward={{name: remote, address: '{server.address}'}}", "rollout.prompts_per_iteration=2", "rollout.candidates=4",
        "selection.k=2", "rollout.explore.steps=2", "rollout.regenerate.steps=2", "train.iterations=1", "eval.n=1",
        "eval.prompts=" + str(_few_eval_captions(tmp_path)), "prompts=" + str(_few_eval_captions(tmp_path)),
        "prompt_sampling=uniform",  # a remote reward's prompts carry no shapes task
    ])
    report = LocalRun(config, tmp_path / "run", log=lambda _: None).run()
    assert report["iterations"] == 1 and report["base_eval"]["metric"] == "reward"
    with pytest.raises(ConfigError, match=r"reward\.0\.remote\.address: Field required \(add it\)"):
        load_config(overrides=["reward=remote"])


def _few_eval_captions(tmp_path) -> pathlib.Path:
    path = tmp_path / "eval.txt"
    path.write_text("\n".join(CAPTIONS[:3]) + "\n")
    return path


def test_generated_code_matches_proto(tmp_path):
    from grpc_tools import protoc

    root = pathlib.Path(__file__).resolve().parents[1]
    assert protoc.main(["protoc", f"-I{root / 'protos'}", f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}", str(root / "protos/solrl/rewards/v1/reward.proto")]) == 0
    for name in ("reward_pb2.py", "reward_pb2_grpc.py"):
        assert (tmp_path / "solrl/rewards/v1" / name).read_text() == (root / "solrl/rewards/v1" / name).read_text(), f"regenerate solrl/rewards/v1/{name} (see protos/README)"


def test_a_request_over_max_pixels_is_refused_before_it_is_decoded():
    server = RewardServer(ShapesReward(), "shapes", port=0, max_pixels=3 * 32 * 32)  # three 32x32 renders
    try:
        images = shapes_images(CAPTIONS[:4])
        with pytest.raises(RemoteRewardError, match="RESOURCE_EXHAUSTED.*image 3 brings the request to 4096 pixels, over .*max_pixels=3072"):
            RemoteReward(server.address, retries=0, encoding="png")(images, CAPTIONS[:4])
        assert server.servicer.scored == 0
        assert RemoteReward(server.address, batch_size=3)(images, CAPTIONS[:4]).shape == (4,)  # split, it fits
    finally:
        server.stop(0)


def test_a_caption_the_reward_cannot_read_is_invalid_argument(server):
    with pytest.raises(grpc.RpcError) as err:
        stub(server.address).Score(reward_pb2.ScoreRequest(images=encode_images(shapes_images(CAPTIONS[:1])), prompts=["a purple hexagon"]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "hexagon" in err.value.details()


class GatedReward:
    """Blocks its first call until released, counting the images it scores."""

    def __init__(self):
        self.release, self.calls = threading.Event(), 0

    def __call__(self, images, prompts):
        self.calls += 1
        self.release.wait(30)
        return torch.zeros(len(images))


def test_a_request_whose_client_is_gone_is_not_scored():
    """A second request waits behind the first for the reward; its client cancels it while it
    waits (known to have arrived: the server counted it), and the server, once it gets the reward,
    drops it unscored."""
    reward = GatedReward()
    server = RewardServer(reward, "gated", port=0)
    try:
        images = encode_images(shapes_images(CAPTIONS[:2]))
        first = stub(server.address).Score.future(reward_pb2.ScoreRequest(images=images, prompts=CAPTIONS[:2]), timeout=60)
        while reward.calls == 0:  # the first request holds the reward
            time.sleep(0.01)
        second = stub(server.address).Score.future(reward_pb2.ScoreRequest(images=images, prompts=CAPTIONS[:2]), timeout=60)
        while server.servicer.requests < 2:  # the second is in the server, waiting behind the first
            time.sleep(0.01)
        assert second.cancel()
        with pytest.raises(grpc.FutureCancelledError):
            second.result()
        # The cancellation reaches the server asynchronously and nothing there shows when it has;
        # released at once, the waiting handler could take the reward before it lands (measured: 1
        # run in 6). On loopback it lands in milliseconds; a second is ample even under load.
        time.sleep(1.0)
        reward.release.set()
        assert list(first.result().scores) == [0.0, 0.0]
        deadline = time.monotonic() + 30
        while server.servicer.abandoned == 0 and time.monotonic() < deadline:  # it gets the reward now
            time.sleep(0.01)
        assert server.servicer.abandoned == 1 and reward.calls == 1 and server.servicer.scored == 2
    finally:
        server.stop(0)


def _self_signed(tmp_path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 / localhost and its key, made here (PEM files)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_tls_with_a_token_scores_and_plaintext_clients_are_refused(tmp_path):
    cert, key = _self_signed(tmp_path)
    with pytest.raises(ValueError, match="go together"):
        RewardServer(ShapesReward(), "shapes", port=0, tls_cert=cert)
    server = RewardServer(ShapesReward(), "shapes", host="127.0.0.1", port=0, token="s3cret", tls_cert=cert, tls_key=key)
    try:
        images = shapes_images(CAPTIONS[:2])
        secure = RemoteReward(server.address, token="s3cret", tls_root_cert=cert)
        torch.testing.assert_close(secure(images, CAPTIONS[:2]), ShapesReward()(images, CAPTIONS[:2]))
        with pytest.raises(RemoteRewardError, match="UNAVAILABLE"):  # a plaintext client cannot even connect
            RemoteReward(server.address, token="s3cret", retries=0, timeout_s=5)(images, CAPTIONS[:2])
        with pytest.raises(RemoteRewardError, match="UNAUTHENTICATED"):
            RemoteReward(server.address, token="wrong", tls_root_cert=cert, retries=0)(images, CAPTIONS[:2])
    finally:
        server.stop(0)

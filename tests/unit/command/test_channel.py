"""Channels over real socketpairs: messages, fragments, and every error path."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading

import pytest

from sozu.command.channel import AsyncChannel, Channel
from sozu.command.framing import FrameError, FrameErrorKind, encode_frame
from sozu.command.proto import (
    Cluster,
    LoadBalancingAlgorithms,
    Request,
    Response,
    ResponseStatus,
    Status,
    WorkerRequest,
)


def pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def cluster_request(name: str) -> Request:
    return Request(
        add_cluster=Cluster(
            cluster_id=name,
            sticky_session=False,
            https_redirect=False,
            load_balancing=LoadBalancingAlgorithms.ROUND_ROBIN,
        )
    )


def test_blocking_round_trip_both_ways() -> None:
    a, b = pair()
    client: Channel[Request, Response] = Channel(a, Response)
    server: Channel[Response, Request] = Channel(b, Request)
    with client, server:
        client.send(cluster_request("app"))
        assert server.recv(timeout=2) == cluster_request("app")
        server.send(Response(status=ResponseStatus.OK, message="done"))
        assert client.recv(timeout=2).message == "done"


def test_blocking_reads_a_frame_sent_byte_by_byte_and_coalesced_frames() -> None:
    a, b = pair()
    server: Channel[Response, Request] = Channel(b, Request)
    frame = encode_frame(cluster_request("slow").SerializeToString())
    both = encode_frame(Request(status=Status()).SerializeToString()) * 2

    def trickle() -> None:
        for byte in frame:
            a.send(bytes([byte]))
        a.sendall(both)

    writer = threading.Thread(target=trickle)
    writer.start()
    assert server.recv(timeout=5).add_cluster.cluster_id == "slow"
    assert server.recv(timeout=5).WhichOneof("request_type") == "status"
    assert server.recv(timeout=5).WhichOneof("request_type") == "status"
    writer.join()
    a.close()
    server.close()


def test_blocking_timeout_is_an_error_and_the_channel_still_works() -> None:
    a, b = pair()
    server: Channel[Response, Request] = Channel(b, Request)
    with pytest.raises(FrameError) as caught:
        server.recv(timeout=0.05)
    assert caught.value.kind is FrameErrorKind.TIMEOUT
    assert caught.value.stream_usable
    a.sendall(encode_frame(Request(status=Status()).SerializeToString()))
    assert server.recv(timeout=2).HasField("status")
    a.close()
    server.close()


def test_undecodable_payload_is_reported_and_the_next_frame_reads() -> None:
    a, b = pair()
    server: Channel[Response, Request] = Channel(b, Request)
    a.sendall(encode_frame(b"\xff\xff\xff garbage"))
    a.sendall(encode_frame(Request(status=Status()).SerializeToString()))
    with pytest.raises(FrameError) as caught:
        server.recv(timeout=2)
    assert caught.value.kind is FrameErrorKind.UNDECODABLE
    assert "Request" in str(caught.value)
    assert server.recv(timeout=2).HasField("status")
    a.close()
    server.close()


def test_missing_required_field_is_undecodable() -> None:
    a, b = pair()
    server: Channel[Response, WorkerRequest] = Channel(b, WorkerRequest)
    # A WorkerRequest with an id but no content: field 2 is required.
    a.sendall(encode_frame(b"\x0a\x02id"))
    with pytest.raises(FrameError) as caught:
        server.recv(timeout=2)
    assert caught.value.kind is FrameErrorKind.UNDECODABLE
    assert "content" in str(caught.value)
    a.close()
    server.close()


def test_sending_a_message_without_required_fields_is_refused() -> None:
    a, b = pair()
    client: Channel[WorkerRequest, Response] = Channel(a, Response)
    with pytest.raises(FrameError) as caught:
        client.send(WorkerRequest(id="x"))
    assert caught.value.kind is FrameErrorKind.UNDECODABLE
    client.close()
    b.close()


def test_declared_length_too_large_and_too_small() -> None:
    for declared, kind in ((3_000_000, FrameErrorKind.TOO_LARGE), (4, FrameErrorKind.TOO_SHORT)):
        a, b = pair()
        server: Channel[Response, Request] = Channel(b, Request)
        a.sendall(struct.pack("<Q", declared))
        with pytest.raises(FrameError) as caught:
            server.recv(timeout=2)
        assert caught.value.kind is kind
        a.close()
        server.close()


def test_hang_up_mid_frame_and_between_frames() -> None:
    a, b = pair()
    server: Channel[Response, Request] = Channel(b, Request)
    a.sendall(encode_frame(Request(status=Status()).SerializeToString()))
    a.sendall(encode_frame(cluster_request("cut").SerializeToString())[:10])
    a.close()
    assert server.recv(timeout=2).HasField("status")
    with pytest.raises(FrameError) as caught:
        server.recv(timeout=2)
    assert caught.value.kind is FrameErrorKind.TRUNCATED
    server.close()

    a, b = pair()
    other: Channel[Response, Request] = Channel(b, Request)
    a.close()
    with pytest.raises(FrameError) as closed:
        other.recv(timeout=2)
    assert closed.value.kind is FrameErrorKind.CLOSED
    other.close()


def test_send_to_a_closed_peer_is_an_io_error() -> None:
    a, b = pair()
    client: Channel[Request, Response] = Channel(a, Response)
    b.close()
    with pytest.raises(FrameError) as caught:
        for _ in range(100):
            client.send(cluster_request("x" * 1000))
    assert caught.value.kind is FrameErrorKind.IO
    client.close()


def test_connect_to_a_missing_socket_raises_oserror(tmp_path) -> None:
    with pytest.raises(OSError):
        Channel.connect(str(tmp_path / "nobody.sock"), Response)


def test_message_over_the_peer_maximum_is_refused_on_send() -> None:
    a, b = pair()
    client: Channel[Request, Response] = Channel(a, Response, 64, 128)
    with pytest.raises(FrameError) as caught:
        client.send(cluster_request("x" * 200))
    assert caught.value.kind is FrameErrorKind.TOO_LARGE
    client.close()
    b.close()


async def test_async_round_trip_errors_and_fragments() -> None:
    a, b = pair()
    client: AsyncChannel[Request, Response] = await AsyncChannel.from_socket(a, Response)
    server: AsyncChannel[Response, Request] = await AsyncChannel.from_socket(b, Request)
    await client.send(cluster_request("async"))
    assert (await server.recv(timeout=2)).add_cluster.cluster_id == "async"

    frame = encode_frame(cluster_request("pieces").SerializeToString())
    for index in range(0, len(frame), 3):
        client.writer.write(frame[index : index + 3])
        await client.writer.drain()
    assert (await server.recv(timeout=2)).add_cluster.cluster_id == "pieces"

    with pytest.raises(FrameError) as timed_out:
        await server.recv(timeout=0.05)
    assert timed_out.value.kind is FrameErrorKind.TIMEOUT

    client.writer.write(encode_frame(b"\x80"))
    with pytest.raises(FrameError) as garbage:
        await server.recv(timeout=2)
    assert garbage.value.kind is FrameErrorKind.UNDECODABLE

    client.writer.write(frame[:5])
    await client.close()
    with pytest.raises(FrameError) as truncated:
        await server.recv(timeout=2)
    assert truncated.value.kind is FrameErrorKind.TRUNCATED
    await server.close()


async def test_async_connect_over_a_unix_listener(tmp_path) -> None:
    path = str(tmp_path / "s.sock")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer: AsyncChannel[Response, Request] = AsyncChannel(reader, writer, Request)
        request = await peer.recv(timeout=2)
        await peer.send(
            Response(status=ResponseStatus.OK, message=request.WhichOneof("request_type"))
        )
        await peer.close()

    server = await asyncio.start_unix_server(answer, path)
    async with server:
        client: AsyncChannel[Request, Response] = await AsyncChannel.connect(path, Response)
        await client.send(Request(status=Status()))
        assert (await client.recv(timeout=2)).message == "status"
        with pytest.raises(FrameError) as closed:
            await client.recv(timeout=2)
        assert closed.value.kind is FrameErrorKind.CLOSED
        await client.close()


def test_retyped_channel_keeps_buffered_frames() -> None:
    from sozu.command.config import parse_config
    from sozu.command.proto import ServerConfig

    a, b = pair()
    server_config = parse_config("max_connections = 5", "/tmp/x.toml").server_config()
    request = WorkerRequest(id="INITIAL-STATUS-0", content=Request(status=Status()))
    a.sendall(
        encode_frame(server_config.SerializeToString()) + encode_frame(request.SerializeToString())
    )
    first: Channel[Response, ServerConfig] = Channel(b, ServerConfig)
    assert first.recv(timeout=2).max_connections == 5
    then = first.retyped(WorkerRequest)
    assert then.recv(timeout=2).id == "INITIAL-STATUS-0"
    a.close()
    then.close()

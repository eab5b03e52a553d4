#!/usr/bin/env python3
"""A scriptable chat.ChatService peer on grpcio, for grpc-chat's interop tests
(tests/chat_interop.rs). The Python twin of goclient/main.go: same flags, same
stdin commands, same JSON lines on stdout.

Its chat_pb2 / chat_pb2_grpc modules are generated from grpc-chat's own
proto/chat.proto with grpcio-tools by scripts/setup-interop.sh into
tests/interop/chat/pygen/. Run it with the venv's Python:

    tests/interop/.venv/bin/python tests/interop/chat/py_client.py \\
        --addr 127.0.0.1:50053 --room r1 --user carol --protocol chat-stream

Commands on stdin, one per line: ``send <text>``, ``typing start|stop``,
``join <name>``, ``leave`` (Chat only), ``close`` (half-close; also at end of
input), ``quit`` (cancel the call and exit).

Output, one JSON object per line: ``ready`` (ChatStream: response headers
arrived), ``message``, ``user``, ``typing``, ``system``, ``health`` and, always
last, ``status`` with the code spelt as grpc-go spells it ("OK",
"InvalidArgument", ...) so both peers read alike.
"""

import argparse
import json
import os
import queue
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "pygen"))

import grpc  # noqa: E402
import chat_pb2  # noqa: E402
import chat_pb2_grpc  # noqa: E402

_out_lock = threading.Lock()


def emit(**fields):
    line = json.dumps(fields, ensure_ascii=False)
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def code_name(code):
    """grpc.StatusCode.ALREADY_EXISTS -> "AlreadyExists" (grpc-go's spelling)."""
    if code == grpc.StatusCode.OK:
        return "OK"
    if code == grpc.StatusCode.CANCELLED:
        return "Canceled"
    return "".join(word.capitalize() for word in code.name.split("_"))


_CLOSE = object()


def read_commands(requests, to_request, call_holder):
    """Feeds stdin commands to `requests` (a queue the request iterator
    drains) until end of input, ``close`` or ``quit``."""
    for raw in sys.stdin:
        cmd, _, arg = raw.rstrip("\n").partition(" ")
        if not cmd:
            continue
        if cmd == "close":
            break
        if cmd == "quit":
            call = call_holder.get("call")
            if call is not None:
                call.cancel()
            break
        request = to_request(cmd, arg)
        if request is not None:
            requests.put(request)
    requests.put(_CLOSE)


def request_iterator(requests):
    while True:
        item = requests.get()
        if item is _CLOSE:
            return
        yield item


def now():
    return int(time.time())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--addr", default="127.0.0.1:50053")
    parser.add_argument("--room", default="")
    parser.add_argument("--user", default="")
    parser.add_argument("--protocol", choices=["chat-stream", "chat", "health"], default="chat")
    parser.add_argument("--gzip", action="store_true", help="compress request messages with gzip")
    parser.add_argument("--join", default="true", choices=["true", "false"],
                        help="Chat: send USER_JOINED with --user first")
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline of the call, seconds")
    args = parser.parse_args()

    metadata = (("chat-room", args.room),) if args.room else ()
    compression = grpc.Compression.Gzip if args.gzip else grpc.Compression.NoCompression
    channel = grpc.insecure_channel(args.addr)
    stub = chat_pb2_grpc.ChatServiceStub(channel)

    if args.protocol == "health":
        try:
            resp = stub.HealthCheck(chat_pb2.HealthCheckRequest(), timeout=args.timeout,
                                    metadata=metadata, compression=compression)
            emit(kind="health", status=resp.status, active_clients=resp.active_clients,
                 uptime_seconds=resp.uptime_seconds)
            emit(kind="status", code="OK", message="")
        except grpc.RpcError as e:
            emit(kind="status", code=code_name(e.code()), message=e.details() or "")
        return

    requests = queue.Queue()
    call_holder = {}

    if args.protocol == "chat-stream":
        def to_request(cmd, arg):
            if cmd == "send":
                return chat_pb2.ChatMessage(user=args.user, message=arg)
            print(f"py_client: ChatStream has no command {cmd!r}", file=sys.stderr)
            return None
        call = stub.ChatStream(request_iterator(requests), timeout=args.timeout,
                               metadata=metadata, compression=compression)
    else:
        def user_event(kind, name):
            return chat_pb2.ClientEvent(user_event=chat_pb2.UserEvent(
                type=kind, username=name, timestamp=now()))

        def to_request(cmd, arg):
            if cmd == "send":
                return chat_pb2.ClientEvent(chat_message=chat_pb2.ChatMessageEvent(
                    message=arg, username=args.user, timestamp=now()))
            if cmd == "typing":
                kind = chat_pb2.TYPING_STOP if arg == "stop" else chat_pb2.TYPING_START
                return chat_pb2.ClientEvent(typing_event=chat_pb2.TypingEvent(
                    type=kind, username=args.user, timestamp=now()))
            if cmd == "join":
                return user_event(chat_pb2.USER_JOINED, arg)
            if cmd == "leave":
                return user_event(chat_pb2.USER_LEFT, args.user)
            print(f"py_client: Chat has no command {cmd!r}", file=sys.stderr)
            return None
        if args.join == "true":
            requests.put(user_event(chat_pb2.USER_JOINED, args.user))
        call = stub.Chat(request_iterator(requests), timeout=args.timeout,
                         metadata=metadata, compression=compression)
    call_holder["call"] = call

    threading.Thread(target=read_commands, args=(requests, to_request, call_holder),
                     daemon=True).start()

    try:
        if args.protocol == "chat-stream":
            # The server sends the response headers once we are a member.
            call.initial_metadata()
            emit(kind="ready")
            for m in call:
                emit(kind="message", user=m.user, text=m.message, id=m.id,
                     timestamp=m.timestamp)
        else:
            for e in call:
                which = e.WhichOneof("event")
                if which == "chat_message":
                    m = e.chat_message
                    emit(kind="message", user=m.username, text=m.message, id=m.id,
                         timestamp=m.timestamp, you=m.username == args.user)
                elif which == "user_event":
                    u = e.user_event
                    emit(kind="user", type=chat_pb2.UserEventType.Name(u.type),
                         user=u.username, timestamp=u.timestamp)
                elif which == "typing_event":
                    t = e.typing_event
                    emit(kind="typing", type=chat_pb2.TypingEventType.Name(t.type),
                         user=t.username, timestamp=t.timestamp)
                elif which == "system_event":
                    emit(kind="system", text=e.system_event.message,
                         timestamp=e.system_event.timestamp)
                else:
                    emit(kind="unknown")
        emit(kind="status", code=code_name(call.code()), message=call.details() or "")
    except grpc.RpcError as e:
        emit(kind="status", code=code_name(e.code()), message=e.details() or "")
    finally:
        channel.close()


if __name__ == "__main__":
    main()

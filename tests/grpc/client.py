"""A gRPC client for the activator's tests (grpcio, raw bytes): makes the calls named on the
command line to service `echo.Echo` at TARGET with `:authority` AUTHORITY, and prints one JSON
object: for each call, its status code, details, response messages and trailing metadata.

Usage: client.py TARGET AUTHORITY [--timeout SECONDS] CALL...
Calls: unary, server_stream, client_stream, bidi, fail.
"""

import argparse
import json
import sys

import grpc


def run(call):
    """The outcome of one call, made by `call`, which returns the response messages."""
    try:
        return {"code": "OK", "details": "", "messages": call(), "trailers": {}}
    except grpc.RpcError as error:
        return {
            "code": error.code().name,
            "details": error.details() or "",
            "messages": [],
            "trailers": {k: v for k, v in (error.trailing_metadata() or ())},
        }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("authority")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("calls", nargs="+")
    args = parser.parse_args()
    channel = grpc.insecure_channel(
        args.target, options=[("grpc.default_authority", args.authority)]
    )
    identity = lambda b: b
    method = lambda kind, name: getattr(channel, kind)(
        f"/echo.Echo/{name}", request_serializer=identity, response_deserializer=identity
    )
    t = args.timeout
    calls = {
        "unary": lambda: [method("unary_unary", "Unary")(b"hello", timeout=t).decode()],
        "server_stream": lambda: [
            m.decode() for m in method("unary_stream", "ServerStream")(b"5", timeout=t)
        ],
        "client_stream": lambda: [
            method("stream_unary", "ClientStream")(iter([b"a", b"b", b"c"]), timeout=t).decode()
        ],
        "bidi": lambda: [
            m.decode() for m in method("stream_stream", "Bidi")(iter([b"x", b"y"]), timeout=t)
        ],
        "fail": lambda: [method("unary_unary", "Fail")(b"", timeout=t).decode()],
    }
    results = {name: run(calls[name]) for name in args.calls}
    print(json.dumps(results))


if __name__ == "__main__":
    sys.exit(main())

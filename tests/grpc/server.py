"""A gRPC server for the activator's tests, written with grpcio's generic handlers (no generated
code): service `echo.Echo` with one method of each kind, on raw bytes.

  Unary         answers the request with "<request>|<pid>"
  ServerStream  answers N messages "<i>", N being the request as a decimal number
  ClientStream  answers the requests joined with ","
  Bidi          answers every request as it comes, upper-cased
  Fail          aborts with NOT_FOUND and the details "no such thing" (a trailers-only response)

Usage: server.py --port PORT [--bind ADDR]; prints "listening" once it serves.
"""

import argparse
import os
import sys
from concurrent import futures

import grpc


def unary(request, context):
    return request + b"|" + str(os.getpid()).encode()


def server_stream(request, context):
    for i in range(int(request.decode())):
        yield str(i).encode()


def client_stream(requests, context):
    return b",".join(requests)


def bidi(requests, context):
    for request in requests:
        yield request.upper()


def fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "50051")))
    parser.add_argument("--bind", default="127.0.0.1")
    args = parser.parse_args()
    handlers = grpc.method_handlers_generic_handler(
        "echo.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((handlers,))
    server.add_insecure_port(f"{args.bind}:{args.port}")
    server.start()
    print("listening", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    sys.exit(main())

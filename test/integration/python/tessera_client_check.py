#!/usr/bin/env python3
"""A Python client of a running Tessera server, built from the .proto files with grpc_tools.

Generates stubs for tessera/v1, grpc.health.v1 and grpc.reflection.v1 into a temporary directory with
`python3 -m grpc_tools.protoc`, then calls health Check, reflection (list services, file containing
tessera.v1.Generation), GenerateStream (greedy) and one Generate that must fail with INVALID_ARGUMENT.
Prints one JSON object with what it saw; exits non-zero with a message on stderr when something is missing.

proto3 `optional` needs protoc >= 3.12; Debian bookworm's python3-grpc-tools bundles protoc 3.5.1. When the
bundled protoc refuses `optional`, each `optional T name = N;` is rewritten into `oneof _name { T name = N; }`,
which is what `optional` means (a synthetic one-member oneof) and is identical on the wire; presence (an
explicit 0) is kept.
"""
import argparse
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

EXIT_MISSING = 3


def fail(message, code=1):
    print(f"tessera_client_check: {message}", file=sys.stderr)
    sys.exit(code)


OPTIONAL_FIELD = re.compile(r"^(\s*)optional\s+([\w.]+)\s+(\w+)\s*=\s*(\d+)\s*;", re.MULTILINE)


def optional_as_oneof(text):
    return OPTIONAL_FIELD.sub(lambda m: f"{m.group(1)}oneof _{m.group(3)} {{ {m.group(2)} {m.group(3)} = {m.group(4)}; }}", text)


def run_protoc(src, out, files):
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{src}", f"--python_out={out}", f"--grpc_python_out={out}", *files]
    return subprocess.run(cmd, capture_output=True, text=True)


def generate_stubs(args, out):
    """Copies the protos into a source tree (reflection under a name that does not shadow the `grpc` package)."""
    src = os.path.join(out, "_src")
    layout = {
        "tessera/v1/generation.proto": os.path.join(args.proto_dir, "tessera/v1/generation.proto"),
        "tessera/v1/adapters.proto": os.path.join(args.proto_dir, "tessera/v1/adapters.proto"),
        "health/v1/health.proto": os.path.join(args.health_proto_dir, "health/v1/health.proto"),
        "reflection_v1/reflection.proto": os.path.join(args.reflection_proto_dir, "grpc/reflection/v1/reflection.proto"),
    }
    for dest, origin in layout.items():
        if not os.path.isfile(origin):
            fail(f"proto file not found: {origin}")
        os.makedirs(os.path.dirname(os.path.join(src, dest)), exist_ok=True)
        shutil.copyfile(origin, os.path.join(src, dest))
    files = list(layout)
    result = run_protoc(src, out, files)
    rewritten = False
    if result.returncode != 0 and "optional" in result.stderr:
        for name in files:
            path = os.path.join(src, name)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            with open(path, "w", encoding="utf-8") as f:
                f.write(optional_as_oneof(text))
        rewritten = True
        result = run_protoc(src, out, files)
    if result.returncode != 0:
        fail(f"grpc_tools.protoc failed:\n{result.stderr}")
    sys.path.insert(0, out)
    return rewritten


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True, help="HOST:PORT of the server")
    parser.add_argument("--proto-dir", required=True, help="directory holding tessera/v1/*.proto")
    parser.add_argument("--health-proto-dir", required=True, help="directory holding health/v1/health.proto")
    parser.add_argument("--reflection-proto-dir", required=True, help="directory holding grpc/reflection/v1/reflection.proto")
    parser.add_argument("--api-key", default="")
    parser.add_argument("--text", default="hello")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    args = parser.parse_args()

    try:
        import grpc
    except ImportError as err:
        fail(f"the grpc module (python3-grpcio) is not importable by {sys.executable}: {err}", EXIT_MISSING)
    try:
        importlib.import_module("grpc_tools.protoc")
    except ImportError as err:
        fail(f"grpc_tools (python3-grpc-tools) is not importable by {sys.executable}: {err}; install it with `apt-get install python3-grpcio python3-grpc-tools`", EXIT_MISSING)

    out = tempfile.mkdtemp(prefix="tessera-py-stubs-")
    try:
        rewritten = generate_stubs(args, out)
        gen_pb2 = importlib.import_module("tessera.v1.generation_pb2")
        gen_grpc = importlib.import_module("tessera.v1.generation_pb2_grpc")
        health_pb2 = importlib.import_module("health.v1.health_pb2")
        health_grpc = importlib.import_module("health.v1.health_pb2_grpc")
        refl_pb2 = importlib.import_module("reflection_v1.reflection_pb2")
        refl_grpc = importlib.import_module("reflection_v1.reflection_pb2_grpc")
        from google.protobuf import descriptor_pb2

        report = {"grpcio": grpc.__version__, "optional_rewritten": rewritten}
        metadata = [("authorization", f"Bearer {args.api_key}")] if args.api_key else []
        with grpc.insecure_channel(args.target) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)

            health = health_grpc.HealthStub(channel)
            report["health"] = {
                name or "<server>": health_pb2.HealthCheckResponse.ServingStatus.Name(
                    health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
                )
                for name in ["", "tessera.v1.Generation"]
            }

            reflection = refl_grpc.ServerReflectionStub(channel)
            requests = [
                refl_pb2.ServerReflectionRequest(list_services=""),
                refl_pb2.ServerReflectionRequest(file_containing_symbol="tessera.v1.Generation"),
            ]
            replies = list(reflection.ServerReflectionInfo(iter(requests), timeout=10))
            report["services"] = sorted(s.name for s in replies[0].list_services_response.service)
            methods = []
            for raw in replies[1].file_descriptor_response.file_descriptor_proto:
                fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
                for service in fd.service:
                    if f"{fd.package}.{service.name}" == "tessera.v1.Generation":
                        methods = [m.name for m in service.method]
            report["generation_methods"] = methods

            stub = gen_grpc.GenerationStub(channel)
            request = gen_pb2.GenerateStreamRequest(
                request_id="python-1",
                text=args.text,
                sampling=gen_pb2.SamplingParameters(temperature=0.0),
                stopping=gen_pb2.StoppingCriteria(max_new_tokens=args.max_new_tokens, ignore_eos=True),
            )
            if not request.sampling.HasField("temperature"):
                fail("sampling.temperature = 0 lost its presence: the server would sample instead of decoding greedily")
            chunks = list(stub.GenerateStream(request, metadata=metadata, timeout=60))
            last = chunks[-1]
            report["stream"] = {
                "messages": len(chunks),
                "request_ids": sorted({c.request_id for c in chunks}),
                "token_ids": [t for c in chunks for t in c.token_ids],
                "text": "".join(c.text for c in chunks),
                "finish_reason": gen_pb2.FinishReason.Name(last.finish_reason),
                "usage": {"prompt_tokens": last.usage.prompt_tokens, "generated_tokens": last.usage.generated_tokens},
            }

            try:
                stub.Generate(gen_pb2.GenerateRequest(text="x", sampling=gen_pb2.SamplingParameters(top_p=1.5)), metadata=metadata, timeout=10)
                report["error"] = None
            except grpc.RpcError as err:
                trailers = dict(err.trailing_metadata() or [])
                report["error"] = {"code": err.code().name, "details": err.details(), "error_code": trailers.get("tessera-error-code")}
        print(json.dumps(report))
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()

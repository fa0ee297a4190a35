#!/usr/bin/env python3
"""Reference runner: `wasmtime run` for the flags the conformance tests use,
through the wasmtime Python package (a real WASI preview1 runtime).

usage: wasmtime_run.py [--dir HOST::GUEST]... [--env K=V]... MODULE [ARGS...]
stdin, stdout and stderr pass through; the exit status is the task's."""

import sys

import wasmtime


def main(argv):
    dirs, env = [], []
    while argv and argv[0].startswith("--"):
        flag, value = argv[0], argv[1]
        argv = argv[2:]
        if flag == "--dir":
            host, _, guest = value.partition("::")
            dirs.append((host, guest or host))
        elif flag == "--env":
            k, _, v = value.partition("=")
            env.append((k, v))
        else:
            sys.exit(f"unknown flag {flag}")
    module_path, args = argv[0], argv[1:]

    config = wasmtime.WasiConfig()
    config.argv = ["task.wasm"] + args
    config.env = env
    config.inherit_stdin()
    config.inherit_stdout()
    config.inherit_stderr()
    for host, guest in dirs:
        config.preopen_dir(host, guest)

    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    store.set_wasi(config)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    module = wasmtime.Module.from_file(engine, module_path)
    instance = linker.instantiate(store, module)
    try:
        instance.exports(store)["_start"](store)
    except wasmtime.ExitTrap as e:
        sys.stdout.flush()
        sys.exit(e.code)
    sys.stdout.flush()
    sys.exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])

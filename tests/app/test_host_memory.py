"""The `samv2` process's allocator keeps freed memory (app/host_memory.py): a large block
freed and allocated again is not page-faulted in a second time."""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                                reason="the setting is glibc's (mallopt)")

SCRIPT = """
import resource, sys
from samv2_jax.app.host_memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "1" else None
import ctypes
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)

def faults_of_a_big_block():
    # malloc itself, as XLA's runtime calls it (numpy would ask for huge pages)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(256 << 20)  # above every mmap threshold glibc adjusts to
    ctypes.memset(block, 1, 256 << 20)
    libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults_of_a_big_block()
print(applied, faults_of_a_big_block())
"""


def _run(flag, **env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
    done = subprocess.run([sys.executable, "-c", SCRIPT, flag], env={**clean, **env},
                          capture_output=True, text=True, check=True)
    applied, faults = done.stdout.split()
    return applied, int(faults)


def test_a_freed_block_is_reused_without_page_faults():
    pages = (256 << 20) // 4096
    _, faults_default = _run("0")
    applied, faults_kept = _run("1")
    assert applied == "True"
    assert faults_default > 0.9 * pages  # glibc maps such a block afresh each time
    assert faults_kept < 0.02 * pages, faults_kept


def test_a_users_own_malloc_tuning_is_left_alone():
    applied, faults = _run("1", MALLOC_ARENA_MAX="4")
    assert applied == "False"
    assert faults > 0.9 * (256 << 20) // 4096


def test_the_long_running_commands_apply_it_and_main_alone_does_not(monkeypatch):
    from samv2_jax.app import cli, host_memory

    calls = []
    monkeypatch.setattr(host_memory, "keep_freed_memory", lambda: calls.append(1))
    monkeypatch.setattr(cli, "main", lambda: 0)
    for argv, applied in ((["samv2", "track", "v.mp4"], True), (["samv2", "-q", "train"], True),
                          (["samv2", "segment", "a.jpg"], False), (["samv2", "--version"], False)):
        calls.clear()
        monkeypatch.setattr(sys, "argv", argv)
        assert cli.entry() == 0
        assert bool(calls) == applied, argv

"""Every bad-input case of test_errors.py again, in a child interpreter.

Inside the main test process a crash would take pytest down with it; here the
child's exit status is the verdict, so a segfault on any bad input is one
failing test with the child's output attached.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def test_bad_inputs_never_crash_the_interpreter():
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
           os.path.join(HERE, "test_errors.py"), "-k", "not subprocess"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=HERE)
    assert r.returncode == 0, (r.returncode, r.stdout[-3000:], r.stderr[-3000:])
    assert " passed" in r.stdout and " failed" not in r.stdout, r.stdout[-2000:]

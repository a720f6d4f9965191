"""The second user the security tests attack with is real: it cannot read what the owner keeps
private, and can read what is world-readable."""
import os
import sys

import pytest

pytestmark = pytest.mark.security


def test_attacker_is_another_unprivileged_user(attacker, open_dir):
    private, public = open_dir / "private", open_dir / "public"
    private.write_text("secret")
    private.chmod(0o600)
    public.write_text("hello")
    public.chmod(0o644)
    code = "import os, sys; print(os.getuid()); print(open(sys.argv[1]).read())"
    ok = attacker.run([sys.executable, "-c", code, public])
    assert ok.returncode == 0 and ok.stdout.split() == [str(attacker.uid), "hello"]
    assert attacker.uid != 0 and attacker.uid != os.getuid()
    refused = attacker.run([sys.executable, "-c", code, private])
    assert refused.returncode != 0 and "PermissionError" in refused.stderr

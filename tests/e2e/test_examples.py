"""Every configuration under examples/ is one a user can start from: moonwire
--check accepts it (the keys, the values, and the app script's top level),
run from the repository root as the examples' READMEs say."""
import os
import pathlib
import shutil
import subprocess

import pytest

from conftest import BIN, ROOT

EXAMPLES = sorted(pathlib.Path(ROOT, "examples").glob("*/moonwire.conf.lua"))


def check(config, env=None, cwd=ROOT):
    return subprocess.run([BIN, "--config", str(config), "--check"], cwd=cwd,
                          capture_output=True, text=True, timeout=10,
                          env={**os.environ, **(env or {})})


def test_there_are_examples():
    names = {p.parent.name for p in EXAMPLES}
    assert {"chat", "cluster", "systemd", "tls"} <= names, names


@pytest.mark.parametrize("config", EXAMPLES, ids=lambda p: p.parent.name)
def test_example_configuration_passes_check(config, tmp_path):
    cwd = ROOT
    if config.parent.name == "tls":
        # Its certificate is made by the user (examples/tls/make-cert.sh), not
        # kept in git: follow the README in a copy of the tree.
        cwd = tmp_path
        shutil.copytree(config.parent, tmp_path / "examples" / "tls")
        for part in ("scripts", "examples/chat"):
            (tmp_path / part).symlink_to(ROOT / part)
        made = subprocess.run([str(tmp_path / "examples" / "tls" / "make-cert.sh")],
                              capture_output=True, text=True, timeout=30)
        assert made.returncode == 0, made.stderr
    env = None
    if config.parent.name == "php-backend":
        # run.sh puts the JWT secret in the environment; without it the check says so.
        p = check(config, env={"CHAT_JWT_SECRET": ""}, cwd=cwd)
        assert p.returncode != 0
        assert "app.chat.jwt.key_env names an environment variable that is not set (got CHAT_JWT_SECRET)" in p.stderr
        env = {"CHAT_JWT_SECRET": "s" * 64}
    p = check(config, env=env, cwd=cwd)
    assert p.returncode == 0, p.stderr
    assert "are OK" in p.stderr + p.stdout


def test_systemd_example_takes_its_node_and_redis_from_the_environment():
    config = ROOT / "examples" / "systemd" / "moonwire.conf.lua"
    p = check(config, {"MW_NODE_ID": "web1", "MW_REDIS": "redis://10.0.0.5:6379/0",
                       "MW_REDIS_PASSWORD": "secret"})
    assert p.returncode == 0, p.stderr
    # A bad value from the environment is named, not ignored.
    p = check(config, {"MW_REDIS": "http://10.0.0.5/"})
    assert p.returncode == 2, p
    assert "cluster.redis" in p.stderr

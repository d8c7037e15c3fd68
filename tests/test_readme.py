"""The README holds: every config key it names is in the schema, every repository file it names
exists, and every `mgpipe` command it shows parses with the real argument parser."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
REPO_FOLDERS = ("benchmarks/", "config/", "docs/", "mgpipe/", "scripts/", "tests/", "workflow/", "profiles/",
                ".ci/")


def _deref(node: dict) -> dict:
    while "$ref" in node:
        node = SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _resolves(node: dict, parts: list[str]) -> bool:
    for part in parts:
        node = _deref(node)
        props = node.get("properties", {})
        if part in props:
            node = props[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        elif node.get("patternProperties"):
            node = next(iter(node["patternProperties"].values()))
        else:
            return False
    return True


def config_keys() -> list[str]:
    sections = set(SCHEMA["properties"])
    keys = set(re.findall(r"`([a-z_]+(?:\.[a-z_0-9]+)+)`", README))
    file_types = (".h5", ".csv", ".pt", ".png", ".json", ".md", ".html", ".yaml", ".pkl")
    return sorted(k for k in keys if k.split(".")[0] in sections and not k.endswith(file_types))


def repo_files() -> list[str]:
    names = set(re.findall(r"`([A-Za-z0-9_./-]+)`", README)) | set(re.findall(r"\(([A-Za-z0-9_./-]+\.md)\)", README))
    return sorted(n for n in names if n.startswith(REPO_FOLDERS) and "..." not in n and "<" not in n)


def shown_commands(program: str) -> list[str]:
    commands = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith(program + " "):
                commands.append(line)
    return commands


def test_the_readme_names_things_at_all():
    assert len(config_keys()) > 30 and len(repo_files()) > 20 and len(shown_commands("mgpipe")) >= 4


@pytest.mark.parametrize("key", config_keys())
def test_every_config_key_the_readme_names_is_in_the_schema(key):
    assert _resolves(SCHEMA, key.split(".")), f"README names `{key}`, which the schema does not have"


@pytest.mark.parametrize("name", repo_files())
def test_every_file_the_readme_names_exists(name):
    assert (REPO / name.rstrip("/")).exists(), f"README names `{name}`, which the repository does not have"


@pytest.mark.parametrize("command", shown_commands("mgpipe"))
def test_every_mgpipe_command_the_readme_shows_parses(command):
    from mgpipe.cli import parser

    argv = shlex.split(command)[1:]
    try:
        args = parser().parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"README shows `{command}`, which mgpipe refuses (exit {e.code})")
    assert args.command


@pytest.mark.parametrize("command", shown_commands("snakemake"))
def test_every_config_file_a_snakemake_command_names_exists(command):
    argv = shlex.split(command)
    if "--configfile" not in argv:
        return
    files = argv[argv.index("--configfile") + 1:]
    files = files[:next((i for i, a in enumerate(files) if a.startswith("-")), len(files))]
    for name in files:
        if name.startswith(REPO_FOLDERS):
            assert (REPO / name).is_file(), f"`{command}` names {name}, which does not exist"

"""The export's parts without a model: pinned requirements, checksums, the rendered files, and the scripts (run with
``echo`` standing in for the container engine, so the command they would run is what they print)."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest

from core import manifest
from export import bundle, requirements, templates
from serving.http.settings import Settings


def test_the_server_requirements_are_pinned_and_leave_mlflow_and_boto3_out():
    pins = requirements.closure()
    assert pins["torch"].endswith("+cpu") and {"transformers", "fastapi", "uvicorn", "tokenizers"} <= pins.keys()
    assert not pins.keys() & requirements.NEVER
    assert requirements.lines(pins) == [f"{name}=={version}" for name, version in pins.items()]


def test_a_requirement_that_pulls_in_mlflow_is_refused():
    with pytest.raises(RuntimeError, match="must run without them"):
        requirements.closure(("mlflow",))


def test_wheel_names_map_to_pins():
    assert requirements.wheel_pin("torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl") == ("torch", "2.13.0+cpu")
    assert requirements.wheel_pin("PyYAML-6.0.3-cp311-cp311-manylinux_2_17_x86_64.whl") == ("pyyaml", "6.0.3")


@pytest.fixture
def model_folder(tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights" * 1000)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "extra.txt").write_text("x")
    manifest.write(folder)
    return folder


def test_an_intact_folder_verifies(model_folder):
    assert manifest.verify(model_folder) is True
    assert manifest.verify(model_folder / "sub") is False  # no manifest there: nothing to check


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda f: (f / "config.json").unlink(), "config.json is missing"),
        (lambda f: (f / "model.safetensors").write_bytes(b"weights"), "it is truncated or changed"),
        (lambda f: (f / "model.safetensors").write_bytes(b"WEIGHTS" * 1000), "does not match its sha256"),
        (lambda f: (f / "sub" / "extra.txt").write_text("y"), "extra.txt does not match its sha256"),
    ],
    ids=["missing", "truncated", "changed", "nested"],
)
def test_each_kind_of_damage_is_named(model_folder, damage, message):
    damage(model_folder)
    with pytest.raises(manifest.Mismatch, match=message):
        manifest.verify(model_folder)


def test_an_output_folder_is_replaced_only_if_an_export_wrote_it(tmp_path):
    bundle.check_output_dir(tmp_path / "new")  # missing: fine
    (tmp_path / "empty").mkdir()
    bundle.check_output_dir(tmp_path / "empty")
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / bundle.MARKER).write_text("{}")
    bundle.check_output_dir(tmp_path / "earlier")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(bundle.ExportError, match="is not an earlier export"):
        bundle.check_output_dir(tmp_path / "notes")


SPEC = SimpleNamespace(name="Team QA/Model", version="3", alias="champion", run_id="r1")


@pytest.fixture
def rendered(tmp_path):
    settings = bundle.ExportSettings(model_uri="models:/x@champion", output_dir=tmp_path, vendor_wheels=True)
    measured = {
        "questions": 8,
        "max_new_tokens": 48,
        "identical": 5,
        "first_difference_mean": 12.0,
        "tokens_per_s": {"float32": 40.0, "bfloat16": 30.0},
        "weights_bytes": {"float32": 538_000_000, "bfloat16": 269_000_000},
        "cpus": 2,
    }
    templates.render_all(tmp_path, SPEC, settings, templates.image_name(SPEC), measured, 269_000_000)
    return tmp_path


def test_every_file_is_rendered_without_a_placeholder_left(rendered):
    for name in templates.FILES.values():
        assert "%%{" not in (rendered / name).read_text(), name
    assert templates.image_name(SPEC) == "team-qa-model:3"
    readme = (rendered / "README.md").read_text()
    assert "| greedy answers identical to float32 | | 5 of 8 |" in readme and "| weights | 538 MB | 269 MB |" in readme
    assert "--no-index --find-links /wheels" in (rendered / "Dockerfile").read_text()


def test_an_unknown_placeholder_fails_the_render(tmp_path, monkeypatch):
    skeleton = tmp_path / "skeleton"
    skeleton.mkdir()
    (skeleton / "README.md").write_text("model %%{modle}")
    monkeypatch.setattr(templates, "SKELETON", skeleton)
    monkeypatch.setattr(templates, "FILES", {"README.md": "README.md"})
    with pytest.raises(KeyError, match="modle"):
        templates.render_all(tmp_path, SPEC, bundle.ExportSettings("m", tmp_path), "m:1", None, 1)


def run_script(folder, script, **env):
    base = {"PATH": "/usr/bin:/bin", "CONTAINER_ENGINE": "echo"}
    return subprocess.run(["bash", str(folder / script)], env={**base, **env}, capture_output=True, text=True)


def test_run_sh_passes_settings_by_name_and_publishes_on_loopback_by_default(rendered):
    out = run_script(rendered, "run.sh", SERVING_API_KEY="k-very-secret", SERVING_MAX_BATCH_SIZE="8")
    assert out.returncode == 0, out.stderr
    command = out.stdout.splitlines()[0]
    assert "--publish 127.0.0.1:8000:8000" in command and command.endswith("team-qa-model:3")
    assert "--env SERVING_API_KEY" in command and "--env SERVING_MAX_BATCH_SIZE" in command
    assert "k-very-secret" not in out.stdout + out.stderr
    every = {f"SERVING_{name.upper()}" for name in Settings.model_fields} - {"SERVING_MODEL_URI", "SERVING_HOST"}
    assert set(templates.setting_names().split()) == every - {"SERVING_PORT"}


def test_run_sh_and_build_sh_take_their_options_from_the_environment(rendered):
    run = run_script(rendered, "run.sh", HOST="0.0.0.0", PORT="9000", NAME="qa", RUN_FLAGS="--ulimit nofile=10:10")
    command = run.stdout.splitlines()[0]
    assert command.startswith("run --detach --name qa --publish 0.0.0.0:9000:8000 ")
    assert " --ulimit nofile=10:10 " in command and command.endswith(" team-qa-model:3")
    build = run_script(rendered, "build.sh", BASE_IMAGE="localhost/py:3.11", IMAGE="qa:1")
    assert build.stdout.splitlines()[0] == "build --tag qa:1 --build-arg BASE_IMAGE=localhost/py:3.11 ."


def test_test_sh_fails_loudly_when_nothing_answers(rendered):
    from devservices.ports import free_port

    out = run_script(rendered, "test.sh", PORT=str(free_port()), WAIT_S="1")
    assert out.returncode == 1 and "FAIL:" in out.stderr and "/health did not answer 200" in out.stderr


def test_the_bundle_ships_the_native_step_built_and_its_server_needs_no_compiler(tmp_path, monkeypatch):
    """The image has no C compiler: the app the bundle copies holds the native decoding step built here, and the
    server loads that build without compiling (serving.engine.native)."""
    from serving.engine import native

    try:
        native.build(tmp_path / "probe")
    except native.NativeUnavailable as exc:
        pytest.skip(f"no native step on this machine to ship: {exc}")
    bundle._copy_app(tmp_path / "app")
    folder = tmp_path / "app" / "serving" / "engine" / "native"
    assert [p.name for p in folder.glob("*.so")] == [f"step-{native.key()}.so"]
    monkeypatch.setattr(native, "SOURCE", folder / "step.c")
    monkeypatch.setenv("CC", str(tmp_path / "no-compiler-here"))
    monkeypatch.setenv("SERVING_NATIVE_CACHE", str(tmp_path / "empty-cache"))
    native.library.cache_clear()
    try:
        assert native.library().native_step is not None
    finally:
        native.library.cache_clear()
    assert not (tmp_path / "empty-cache").exists()  # nothing was built

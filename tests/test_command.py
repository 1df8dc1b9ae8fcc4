"""A command: the unit dcnprobe runs. Checked before anything runs; placeholders filled."""

from pathlib import Path

import pytest

from dcnprobe.command import Command
from dcnprobe.errors import UsageError
from dcnprobe.settings import Settings


def test_placeholders_are_filled_with_the_settings_and_the_run_directory(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("")
    command = Command.parse(["python", str(script), "--device", "{device}", "--workers={num-workers}", "--out", "{out}"])
    assert command.placeholders == {"device", "num-workers", "out"}
    assert command.render(Settings(device="cpu", num_workers=3), Path("/runs/a")) == [
        "python", str(script), "--device", "cpu", "--workers=3", "--out", "/runs/a"]
    assert command.takes("device") and command.takes("num_workers")  # by placeholder
    assert command.takes("threads")  # from outside
    assert not command.takes("batch_size")


@pytest.mark.parametrize(("words", "message"), [
    ([], "the command after -- is empty"),
    (["  "], "the command after -- is empty"),
    (["no-such-program-here"], "command not found: no-such-program-here"),
    (["python", "missing_script.py"], "no such script: missing_script.py"),
    (["python", "-c", "pass", "{colour}"], "placeholder {colour} in the command names no setting"),
])
def test_bad_commands_are_one_clear_error(words, message):
    with pytest.raises(UsageError, match=message.replace("{", r"\{").replace("}", r"\}")):
        Command.parse(words)


def test_the_code_digest_follows_the_script_folder(tmp_path):
    (tmp_path / "train.py").write_text("import helper\n")
    (tmp_path / "helper.py").write_text("X = 1\n")
    command = Command.parse(["python", str(tmp_path / "train.py")])
    before = command.code_digest()
    assert before == command.code_digest()
    (tmp_path / "helper.py").write_text("X = 2\n")  # a module the script imports changed
    assert command.code_digest() != before


def test_a_module_command_hashes_its_package():
    command = Command.parse(["python", "-m", "json.tool"])
    assert command.module == "json.tool" and command.script is None
    assert any(path.name == "tool.py" for path in command.code_files())

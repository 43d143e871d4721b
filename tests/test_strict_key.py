"""--strict-key (CLI.md, Inputs): with --key, a key value that lacks a match in another file
is an error naming the file, the key column, the row and the value; without it such keys
are counted and reported. The unmatched rows here are written by hand."""
import json

from conftest import run_subprocess


def _files(tmp_path, extra_in_b=False):
    a = tmp_path / "a.csv"
    a.write_text("id,y\n1,1.0\n2,2.0\n3,3.0\n7,4.0\n")
    b = tmp_path / "b.csv"
    b.write_text("id,yhat\n3,3.5\n1,1.5\n2,2.5\n" + ("9,9.0\n" if extra_in_b else ""))
    return str(a), str(b)


def _error(r) -> str:
    assert r.code == 2 and r.out == "", (r.code, r.out, r.err)
    (line,) = r.err.strip().splitlines()
    return line


def test_without_strict_key_unmatched_keys_are_counted(cli, tmp_path):
    a, b = _files(tmp_path)
    r = cli("eval", a, b, "--key", "id", "-l", "mse", "-f", "json")
    assert r.code == 0
    d = json.loads(r.out)
    assert d["rows"] == 3 and d["join"] == {"matched": 3, "only_in_data": 1, "only_in_data2": 0}
    assert d["results"][0]["value"] == 0.25


def test_strict_key_names_the_file_column_row_and_value(cli, tmp_path):
    a, b = _files(tmp_path)
    line = _error(cli("eval", a, b, "--key", "id", "-l", "mse", "--strict-key"))
    assert line == (f"lossctl: error: {a}, column 'id', row 4: --strict-key: 1 value of key 'id' has no match "
                    f"in {b} (got 7)")


def test_strict_key_checks_the_second_file_too(cli, tmp_path):
    a, b = _files(tmp_path, extra_in_b=True)
    (tmp_path / "a.csv").write_text("id,y\n1,1.0\n2,2.0\n3,3.0\n")
    line = _error(cli("eval", a, b, "--key", "id", "-l", "mse", "--strict-key"))
    assert f"{b}, column 'id', row 4: --strict-key: 1 value of key 'id' has no match in {a} (got 9)" in line


def test_strict_key_passes_when_every_key_matches(cli, tmp_path):
    a, b = _files(tmp_path)
    (tmp_path / "a.csv").write_text("id,y\n1,1.0\n2,2.0\n3,3.0\n")
    r = cli("eval", a, b, "--key", "id", "-l", "mse", "--strict-key", "-f", "json")
    assert r.code == 0 and json.loads(r.out)["results"][0]["value"] == 0.25


def test_check_takes_strict_key_as_a_flag_and_from_its_config(cli, tmp_path):
    a, b = _files(tmp_path)
    args = ("check", a, b, "--key", "id", "-t", "y", "-p", "yhat", "--assert", "mse < 1")
    assert cli(*args).code == 0
    assert "--strict-key: 1 value of key 'id' has no match" in _error(cli(*args, "--strict-key"))
    cfg = tmp_path / "lossctl.toml"
    cfg.write_text(f'[data]\npath = "{a}"\ndata2 = "{b}"\nkey = "id"\nstrict_key = true\ntarget = "y"\npred = "yhat"\n'
                   '[[check]]\nloss = "mse"\nmax = 1\n')
    assert "--strict-key" in _error(cli("check", "--config", str(cfg)))
    cfg.write_text(f'[data]\npath = "{a}"\nstrict_key = "yes"\n')
    assert "data.strict_key must be true or false" in _error(cli("check", "--config", str(cfg)))


def test_strict_key_from_a_real_process(tmp_path):
    a, b = _files(tmp_path)
    r = run_subprocess("eval", a, b, "--key", "id", "-l", "mse", "--strict-key")
    assert r.code == 2 and r.out == "" and "Traceback" not in r.err and "(got 7)" in r.err

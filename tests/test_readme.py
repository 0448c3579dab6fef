"""The README's commands run as printed. Its "Try it here" block runs as one `bash -e` script (it stops at the first
failing line) in a fresh copy of the checkout (tracked and untracked files, no output/ or out/ folder), with the
project's .venv. Every other command
it prints needs a GPU pod, the real model or a network, so each is checked against what is installed: the executable
exists, its subcommand and flags are in its `--help`, fluxid's own parser and config accept the arguments and
variables, papermill names a notebook and its parameters and writes into a folder that exists. The missing-model
error's commands too."""
import ast, json, os, re, shlex, shutil, subprocess, sys
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO/'README.md'
VENV = Path(sys.prefix)          # the project's .venv when tests run as `make test` runs them
BIN = VENV/'bin'
TRY_IT = 'Try it here'
# papermill options that take values (the rest of its options are flags)
_PM_TWO = {'-p', '--parameters', '-r', '--parameters_raw'}
_PM_ONE = {'-y', '--parameters_yaml', '-f', '--parameters_file', '-b', '--parameters_base64', '-k', '--kernel',
           '--cwd', '--language', '--engine', '--start-timeout', '--execution-timeout'}


def shell_blocks(text: str) -> list[tuple[str, str]]:
    "(heading, code) of every fenced shell block, with the last heading above it."
    out, heading, lines, lang = [], '', None, ''
    for line in text.splitlines():
        if lines is None:
            if line.startswith('#'): heading = line.lstrip('#').strip()
            elif line.startswith('```'): lines, lang = [], line[3:].strip()
        elif line.startswith('```'):
            if lang in ('bash', 'sh', 'shell', 'console'): out.append((heading, '\n'.join(lines)))
            lines = None
        else: lines.append(line)
    return out


def commands(code: str) -> list[list[str]]:
    "The simple commands of a shell snippet as argv lists: comments dropped, `&&` chains split."
    out = []
    for line in code.replace('\\\n', ' ').splitlines():
        cur = []
        for w in shlex.split(line, comments=True):
            assert w not in ('|', ';', '||', '&'), f"the README test reads simple commands and `&&` only: {line}"
            if w == '&&': out.append(cur); cur = []
            else: cur.append(w)
        out.append(cur)
    return [c for c in out if c]


def split_env(argv: list[str]) -> tuple[dict, list[str]]:
    "Leading `NAME=value` words as an environment, and the command after them."
    env = {}
    while argv and re.fullmatch(r'[A-Z_][A-Z0-9_]*=.*', argv[0]):
        k, v = argv[0].split('=', 1); env[k] = v; argv = argv[1:]
    return env, argv


# what the README shows as a mistake: papermill without an output path prints the executed notebook to the terminal
COUNTER_EXAMPLES = {'papermill nbs/train.ipynb -p profile final'}


def inline_commands(text: str) -> list[str]:
    "Inline code spans outside fenced blocks that are commands of the checked executables."
    out = []
    for span in re.findall(r'`([^`\n]+)`', re.sub(r'```.*?```', '', text, flags=re.S)):
        try: cmd = split_env(shlex.split(span))[1]
        except ValueError: continue                                    # prose with a quote in it
        if ' / ' in span: continue                                    # a list of subcommands, not a command
        if cmd and cmd[0] in CHECKS and span not in COUNTER_EXAMPLES: out.append(span)
    return out


def _help(argv: list[str]) -> str:
    p = subprocess.run(argv + ['--help'], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"))
    assert p.returncode == 0, f"`{' '.join(argv)} --help` failed: {p.stderr[-500:]}"
    return p.stdout


def _exe(name: str) -> str:
    path = shutil.which(name, path=str(BIN))
    assert path, f"`{name}` is not installed in the project's environment ({BIN})"
    return path


def _flags_in_help(argv: list[str], help_text: str, what: str):
    for w in argv:
        if w.startswith('-'):
            assert re.search(rf'(^|[\s,]){re.escape(w.split("=")[0])}([\s,=]|$)', help_text, re.M), \
                f"`{w}` is not an option of `{what}`"


def notebook_parameters(nb: Path) -> set[str]:
    "Names assigned in the notebook's `parameters` cell."
    cells = [c for c in json.loads(nb.read_text())['cells'] if 'parameters' in c['metadata'].get('tags', [])]
    assert len(cells) == 1, f"{nb} has {len(cells)} parameters cells"
    tree = ast.parse(''.join(cells[0]['source']))
    return {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}


def _tracked_dir(rel: str) -> bool:
    "Whether a fresh clone has this folder (some tracked file lies under it)."
    p = subprocess.run(['git', 'ls-files', '--', rel], cwd=REPO, capture_output=True, text=True)
    return p.returncode == 0 and bool(p.stdout.strip())


def check_make(argv, env, made):
    for target in argv[1:]:
        p = subprocess.run(['make', '-n', target], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, f"`make {target}`: {p.stderr.strip()[-300:]}"


def check_source(argv, env, made):
    assert len(argv) == 2 and (REPO/argv[1]).is_file(), f"`{shlex.join(argv)}`: no {argv[1]} after `make venv`"


def check_mkdir(argv, env, made):
    assert '-p' in argv[1:], f"`{shlex.join(argv)}`: use mkdir -p (it can run twice)"
    made.update(os.path.normpath(a) for a in argv[1:] if not a.startswith('-'))


def check_hf(argv, env, made):
    sub = []
    for w in argv[1:]:
        if w.startswith('-') or '/' in w: break
        sub.append(w)
    help_text = _help([_exe('hf'), *sub])
    _flags_in_help(argv[1:], help_text, f"hf {' '.join(sub)}")


def check_fluxid(argv, env, made):
    _exe('fluxid')
    from fluxid_nb.cli import parser, _overrides
    from fluxid_nb.config import GUIDE_ENV, resolve_config
    unknown = [k for k in env if k not in GUIDE_ENV and not k.startswith('FLUXID_')]
    assert not unknown, f"`{shlex.join(argv)}`: {unknown} are not variables fluxid reads"
    try: a = parser().parse_args(argv[1:])
    except SystemExit: raise AssertionError(f"`{shlex.join(argv)}`: fluxid's parser refuses it (see stderr above)")
    if a.cmd in ('train', 'dry-run'):
        resolve_config(a.profile, env=env, dry_run=True, **_overrides(a))   # unknown keys and bad values raise
    elif a.cmd == 'analyze':
        resolve_config(a.profile, env=env, data_dir=a.data_dir, trigger=a.trigger or None)
    elif a.cmd == 'evaluate' and a.set:
        import inspect
        from fluxid_nb.evaluate import evaluate
        known = set(inspect.signature(evaluate).parameters) | {'strict'}
        bad = [kv for kv in a.set if kv.split('=', 1)[0] not in known]
        assert not bad, f"`{shlex.join(argv)}`: {bad} are not options of fluxid evaluate"


def check_accelerate(argv, env, made):
    assert argv[1:2] == ['launch'], f"`{shlex.join(argv)}`: only `accelerate launch` is checked"
    assert '-m' in argv, f"`{shlex.join(argv)}`: launch the module, `-m fluxid_nb.cli`"
    i = argv.index('-m')
    _flags_in_help(argv[2:i + 1], _help([_exe('accelerate'), 'launch']), 'accelerate launch')
    import importlib.util
    module, rest = argv[i + 1], argv[i + 2:]
    assert importlib.util.find_spec(module), f"`{shlex.join(argv)}`: no module {module}"
    assert module == 'fluxid_nb.cli', f"`{shlex.join(argv)}`: only fluxid's CLI is checked"
    check_fluxid(['fluxid', *rest], env, made)


def papermill_args(argv: list[str]) -> tuple[list[str], list[str]]:
    "A papermill command's positional arguments (notebook, output) and the names of its `-p` parameters."
    pos, params, i = [], [], 1
    while i < len(argv):
        w = argv[i]
        if w in _PM_TWO: params.append(argv[i + 1]); i += 3
        elif w in _PM_ONE: i += 2
        elif w.startswith('-'): i += 1
        else: pos.append(w); i += 1
    return pos, params


def check_papermill(argv, env, made):
    _flags_in_help([w for w in argv[1:] if w.startswith('-')], _help([_exe('papermill')]), 'papermill')
    pos, params = papermill_args(argv)
    assert len(pos) == 2, (f"`{shlex.join(argv)}`: name the output notebook, or papermill prints the whole executed "
                           "notebook to the terminal")
    nb, out = REPO/pos[0], pos[1]
    assert not Path(pos[0]).is_absolute() and nb.is_file(), f"`{shlex.join(argv)}`: no notebook {pos[0]} in the checkout"
    missing = set(params) - notebook_parameters(nb)
    assert not missing, f"`{shlex.join(argv)}`: {sorted(missing)} are not in {pos[0]}'s parameters cell"
    parent = os.path.normpath(os.path.dirname(out) or '.')
    assert parent == '.' or parent in made or (not os.path.isabs(parent) and _tracked_dir(parent)), \
        f"`{shlex.join(argv)}`: papermill makes no folders, and {parent}/ is neither in a fresh clone nor made by `mkdir -p` before"


CHECKS = dict(make=check_make, source=check_source, mkdir=check_mkdir, hf=check_hf, fluxid=check_fluxid,
              accelerate=check_accelerate, papermill=check_papermill)


def problems(snippets: list[str]) -> list[str]:
    "Every problem of these shell snippets, each checked in order (a `mkdir -p` counts for what follows it)."
    out = []
    for code in snippets:
        made = set()
        for argv in commands(code):
            env, cmd = split_env(argv)
            try:
                assert cmd, f"`{shlex.join(argv)}`: no command"
                if cmd[0] not in CHECKS:
                    _exe(cmd[0])
                    raise AssertionError(f"`{shlex.join(argv)}`: the README test knows no check for `{cmd[0]}`")
                CHECKS[cmd[0]](cmd, env, made)
            except Exception as e: out.append(f"{type(e).__name__}: {e}")
    return out


def try_it_block(text: str) -> str:
    blocks = [code for heading, code in shell_blocks(text) if heading == TRY_IT]
    assert len(blocks) == 1, f"README.md needs one shell block under `## {TRY_IT}` (the commands this test runs)"
    return blocks[0]


def test_readme_commands_exist_as_printed():
    text = README.read_text()
    blocks = [code for heading, code in shell_blocks(text) if heading != TRY_IT]
    assert blocks and any('papermill' in b for b in blocks) and any('hf download' in b for b in blocks)
    bad = problems(blocks + inline_commands(text))
    assert not bad, "README commands that would not run as printed:\n" + '\n'.join(bad)


def test_readme_names_only_variables_fluxid_reads():
    from fluxid_nb.config import GUIDE_ENV
    para = README.read_text().split('Every variable of the guide works:', 1)[1].split('\n\n', 1)[0]
    words = ' '.join(re.findall(r'`([^`]+)`', para)).split()
    names = {w for w in words if re.fullmatch(r'[A-Z][A-Z0-9_]*[A-Z0-9]', w)}      # not the pattern FLUXID_<KEY>
    names -= {'FLUXID_NETWROK_ALPHA'}                                  # the README's example of a typo
    assert names and not {n for n in names if n not in GUIDE_ENV and not n.startswith('FLUXID_')}, names


def test_missing_model_message_prints_commands_that_run(tmp_path):
    from fluxid_nb.models import ModelError, check_model_dir
    with pytest.raises(ModelError) as e: check_model_dir(tmp_path/'nope')
    msg = str(e.value)
    cmds = [l.strip() for l in msg.splitlines() if l.startswith('    ')] + re.findall(r'`([^`\n]+)`', msg)
    assert any(c.startswith('hf download black-forest-labs/FLUX.1-dev --local-dir ') for c in cmds), msg
    bad = problems(cmds)
    assert not bad, "the missing-model message prints commands that do not run:\n" + '\n'.join(bad)


def fresh_copy(dest: Path) -> Path:
    "The checkout as a fresh clone of its working tree has it: tracked and untracked files, nothing ignored."
    p = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=REPO,
                       capture_output=True)
    if p.returncode != 0: pytest.skip("not a git checkout")
    for rel in filter(None, p.stdout.decode().split('\0')):
        src = REPO/rel
        if src.is_file():
            (dest/rel).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(src, dest/rel)
    return dest


def test_try_it_here_runs_as_printed(tmp_path):
    block = try_it_block(README.read_text())
    if not (BIN/'activate').is_file(): pytest.skip(f"tests do not run in a venv ({VENV})")
    clone = fresh_copy(tmp_path/'fluxid')
    assert not (clone/'output').exists() and not (clone/'out').exists()
    (clone/'.venv').symlink_to(VENV)                        # `make venv` there would make the same one
    # the editable install maps fluxid_nb to this checkout; PYTHONPATH maps it to the copy, as its own install would
    env = dict(os.environ, PYTHONPATH=str(clone), OMP_NUM_THREADS='2')
    env.pop('VIRTUAL_ENV', None)
    p = subprocess.run(['bash', '-e', '-c', block], cwd=clone, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, f"the README's `{TRY_IT}` block failed (exit {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    for argv in commands(block):
        env_, cmd = split_env(argv)
        if cmd[0] == 'papermill':                      # the executed notebook is where the README says
            out = clone/papermill_args(cmd)[0][1]
            assert out.is_file() and json.loads(out.read_text())['cells'], out
        if cmd[:2] == ['fluxid', 'evaluate']:
            assert (clone/cmd[2]/'eval'/'report.md').is_file()
    assert not (clone/'out').exists()

"""The interactive ``sparsedsl`` prompt (prompt_toolkit): multi-line input that knows when a kernel
is complete, highlighting, completion, persistent history; errors never end it (Ctrl-D or
``:quit`` do)."""

from __future__ import annotations

import os
import re
import sys
import traceback

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import Completer, Completion, PathCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings
from prompt_toolkit.lexers import PygmentsLexer

import sparsedsl as sd

from ..errors import DSLError, FormatError
from .commands import COMMANDS, DTYPES, HELP, LET_WORDS, NAMED_FORMATS, STAGES, Quit
from .lexer import FUNCTIONS, REDUCERS, SparseDSLLexer
from .session import Session
from .source import is_complete

PROMPT, CONTINUATION = "sdsl> ", "  ... "
KEYWORDS = ("format", "kernel", "let", "run", "print", "scalar", "true", "false")


def history_path() -> str | None:
    """$SPARSEDSL_HISTORY, else $XDG_DATA_HOME/sparsedsl/history (~/.local/share/sparsedsl/history);
    None (history in memory only) when that directory cannot be made."""
    path = os.environ.get("SPARSEDSL_HISTORY") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "sparsedsl", "history")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a"):
            pass
        return path
    except OSError:
        return None


class SessionCompleter(Completer):
    """Completes what fits where the cursor is: a command after ':', a stage after ':show', a format
    after ':' in a kernel header or after 'random', a file after 'load'/':save', else keywords,
    functions, reducers and every name the session defines."""

    def __init__(self, session: Session):
        self.session = session
        self.paths = PathCompleter(expanduser=True)

    def get_completions(self, document: Document, complete_event):
        line = document.current_line_before_cursor
        m = re.search(r"(?:^|(?<=\s)):[A-Za-z_]*$|[A-Za-z_]\w*$", line)
        word = m.group() if m else ""
        m = re.match(r"\s*:?(load|save)\s+(?:[A-Za-z_]\w*\s+)?(?:let\s+\w+\s*=\s*load\s+)?(\S*)$", line)
        m = m or re.match(r".*=\s*load\s+[\"']?(\S*)$", line)
        if m and (line.rstrip() != line or m.groups()[-1]):  # a path after load / save
            sub = Document(m.groups()[-1].strip("\"'"), len(m.groups()[-1].strip("\"'")))
            yield from self.paths.get_completions(sub, complete_event)
            return
        if word.startswith(":"):
            for c in COMMANDS:
                if (":" + c).startswith(word):
                    yield Completion(":" + c, -len(word), display_meta=COMMANDS[c].split(":")[0])
            return
        s = self.session
        if re.match(r"\s*:?show\s+\w*$", line):
            options = STAGES
        elif re.search(r"(:\s*|random\s+|as\s+|zeros\s+\S+\s+|eye\s+\d+\s+)\w*$", line):
            options = (*[f.split("(")[0] for f in NAMED_FORMATS], *s.formats, "scalar")
        elif re.search(r"dtype\s+\w*$", line):
            options = DTYPES
        elif re.search(r"=\s*\w*$", line) and re.match(r"\s*:?let\b", line):
            options = (*LET_WORDS, *s.tensors, *s.kernels)
        else:
            options = (*s.kernels, *s.tensors, *s.formats, *KEYWORDS, *FUNCTIONS, *REDUCERS)
        seen = set()
        for opt in options:
            if opt.startswith(word) and opt not in seen:
                seen.add(opt)
                meta = ("kernel" if opt in s.kernels else "tensor" if opt in s.tensors else
                        "format" if opt in s.formats else "")
                yield Completion(opt, -len(word), display_meta=meta)


def key_bindings() -> KeyBindings:
    kb = KeyBindings()

    @kb.add("enter")
    def _(event):
        buf = event.current_buffer
        if buf.document.is_cursor_at_the_end and is_complete(buf.text):
            buf.validate_and_handle()
            return
        indent = re.match(r"\s*", buf.document.current_line).group()
        if buf.document.current_line_before_cursor.rstrip().endswith("{"):
            indent += "    "
        buf.insert_text("\n" + indent)

    @kb.add("escape", "enter")
    def _(event):  # run the input as it is, complete or not (Alt-Enter / Esc Enter)
        event.current_buffer.validate_and_handle()

    @kb.add("}")
    def _(event):  # a closing brace dedents its line
        buf = event.current_buffer
        line = buf.document.current_line_before_cursor
        if line.strip() == "" and len(line) >= 4:
            buf.delete_before_cursor(4)
        buf.insert_text("}")

    return kb


def print_error(exc: BaseException, session: Session, out=print):
    if isinstance(exc, DSLError):
        out(f"error: {session.relocate(exc)}")
    elif isinstance(exc, FormatError | ValueError | TypeError | OSError):
        out(f"error: {exc}".rstrip())
    else:  # a bug in sparsedsl: say so, with the traceback, and keep the session
        out("internal error (please report it):\n" + "".join(traceback.format_exception(exc)).rstrip())


def repl(input=None, output=None) -> int:  # noqa: A002 - prompt_toolkit's names
    """Run the interactive prompt until Ctrl-D or :quit; returns the exit status. When the input is
    not a terminal (``sparsedsl < script.sdsl``, a pipe), it is run as a script instead."""
    if input is None and not sys.stdin.isatty():
        return run_script("<stdin>", text=sys.stdin.read())
    session = Session(out=lambda text: print(text, flush=True))
    path = history_path()
    prompt = PromptSession(
        message=PROMPT, multiline=True, key_bindings=key_bindings(), prompt_continuation=CONTINUATION,
        lexer=PygmentsLexer(SparseDSLLexer), completer=SessionCompleter(session), complete_while_typing=False,
        history=FileHistory(path) if path else InMemoryHistory(), enable_history_search=False,
        input=input, output=output)
    print(f"sparsedsl {sd.__version__}: formats, kernels and :commands. :help lists them; Ctrl-D leaves.",
          flush=True)
    count = 0
    while True:
        try:
            text = prompt.prompt()
        except KeyboardInterrupt:
            continue  # Ctrl-C drops the input
        except EOFError:
            return 0
        if not text.strip():
            continue
        count += 1
        try:
            names = session.run(text, f"In[{count}]")
            for name in names:
                obj = session.kernels.get(name) or session.formats.get(name)
                print(f"{obj!r}" if name in session.kernels else f"format {name} = {obj.spelling()}", flush=True)
        except Quit:
            return 0
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        except Exception as exc:  # noqa: BLE001 - nothing the user types ends the session
            print_error(exc, session, lambda t: print(t, flush=True))


def run_script(path: str, out=print, text: str | None = None) -> int:
    """``sparsedsl run FILE.sdsl``: declarations, then statements; 0, or 2 with file:line:col on stderr.
    Given ``text`` (``sparsedsl < FILE``: the REPL's input is not a terminal), runs that, named ``path``,
    relative to the working directory."""
    from ..loader import read_source

    base = os.getcwd() if text is not None else os.path.dirname(os.path.abspath(path))
    session = Session(out=out, base_dir=base)
    try:
        text = read_source(path) if text is None else text
        names = session.run(text, path, base)
    except Quit:
        return 0
    except DSLError as exc:
        exc = session.relocate(exc)
        where = f"{exc.span.file}:{exc.span.line}:{exc.span.col}: " if exc.span else ""
        print(f"{where}error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{exc.filename or path}: error: cannot read it: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except (FormatError, ValueError, TypeError) as exc:
        print(f"{path}: error: {exc}", file=sys.stderr)
        return 2
    from .source import split_source

    if not split_source(text)[1]:  # only declarations: list them, checked
        for name in names:
            if name in session.formats:
                out(f"format {name} = {session.formats[name].spelling()}")
            else:
                prog = session.kernels[name].program
                ps = ", ".join(f"{p.name}: {p.format or p.kind}" for p in prog.params)
                outs = ", ".join(f"{p.name}: {p.format or 'dense'}" for p in prog.outputs)
                out(f"kernel {name}({ps}) -> {outs}: {len(prog.statements)} statement(s), checked")
    return 0


__all__ = ["HELP", "repl", "run_script"]

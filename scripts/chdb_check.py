#!/usr/bin/env python3
"""Check ClickHouse DDL and Native-format files against a real ClickHouse engine (chdb).

Usage:
    chdb_check.py --ddl FILE.sql [--native TABLE=FILE.native ...] [--query SQL ...]
                  [--allow-cast]

Steps, all in one chdb session over a fresh temporary directory:
  1. every statement of the DDL file, in order;
  2. for each --native TABLE=FILE: the file's column names and types (from its
     block header) must equal the table's insertable columns, in order (unless
     --allow-cast), then
         INSERT INTO TABLE SELECT * FROM file('/abs/FILE', 'Native')
  3. for each --query SQL: the result in JSONEachRow, written to stdout verbatim.

DDL statements end at a line that is exactly ";" or at a ";" ending a line;
lines starting with "--" are ignored, as are empty statements.

"chdb version: X" goes to stderr first. Exit 0 when everything succeeded; on
the first failure the statement and the engine's error go to stderr, exit 1.
Run it through scripts/chdb-check, which provides the virtualenv with chdb.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

try:
    from chdb import session as chs
except ImportError:  # pragma: no cover - environment problem
    sys.stderr.write("chdb is not installed; run scripts/chdb-check instead\n")
    sys.exit(1)


class CheckFailed(Exception):
    pass


def split_statements(text):
    """Split DDL text into statements (see module doc for the rules)."""
    statements, current = [], []

    def flush():
        stmt = "\n".join(current).strip()
        while stmt.endswith(";"):
            stmt = stmt[:-1].rstrip()
        if stmt:
            statements.append(stmt)
        current.clear()

    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("--"):
            continue
        if stripped == ";":
            flush()
            continue
        current.append(line.rstrip())
        if stripped.endswith(";"):
            flush()
    flush()
    return statements


def sql_string(s):
    """A ClickHouse single-quoted string literal."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Checker:
    def __init__(self, sess):
        self.sess = sess

    def run(self, sql, fmt="CSV", what=None):
        """Run one statement; on any engine error raise CheckFailed with both."""
        try:
            res = self.sess.query(sql, fmt)
        except Exception as e:  # ChdbError / RuntimeError from the engine
            raise CheckFailed(self._describe(what, sql, str(e)))
        has_error = getattr(res, "has_error", None)
        if callable(has_error) and has_error():
            raise CheckFailed(self._describe(what, sql, res.error_message()))
        return res

    @staticmethod
    def _describe(what, sql, err):
        head = f"FAILED: {what}\n" if what else "FAILED\n"
        return f"{head}statement:\n{sql}\nerror:\n{err.strip()}"

    def rows(self, sql, what=None):
        """Rows (lists of values) of a small metadata query."""
        out = self.run(sql, "JSONCompactEachRow", what).bytes().decode("utf-8")
        return [json.loads(line) for line in out.splitlines() if line.strip()]


def user_files_dir(chk):
    rows = chk.rows(
        "SELECT value FROM system.server_settings WHERE name = 'user_files_path'"
    )
    return rows[0][0] if rows and rows[0][0] else None


def insert_native(chk, table, path, allow_cast):
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise CheckFailed(f"FAILED: --native {table}={path}\nerror:\nno such file")
    size = os.path.getsize(path)

    def attempt(file_ref):
        src = f"file({sql_string(file_ref)}, 'Native')"
        what = f"--native {table}={path} ({size} bytes)"
        file_cols = chk.rows(f"DESCRIBE TABLE {src}", what + ": reading the file's header")
        file_cols = [(r[0], r[1]) for r in file_cols]
        if not allow_cast:
            # Columns an INSERT must supply: not MATERIALIZED / ALIAS / EPHEMERAL.
            # DESCRIBE: name, type, default_type, default_expression, ...
            table_cols = chk.rows(
                f"DESCRIBE TABLE {table}", what + ": reading the table's columns"
            )
            table_cols = [
                (r[0], r[1])
                for r in table_cols
                if r[2] not in ("MATERIALIZED", "ALIAS", "EPHEMERAL")
            ]
            if not table_cols:
                raise CheckFailed(f"FAILED: {what}\nerror:\ntable {table} not found")
            if file_cols != table_cols:
                lines = [f"FAILED: {what}", "error:",
                         "the file's columns differ from the table's "
                         "(pass --allow-cast to let ClickHouse convert):",
                         f"  {'#':>3}  {'file':<50} table"]
                for i in range(max(len(file_cols), len(table_cols))):
                    f = " ".join(file_cols[i]) if i < len(file_cols) else "-"
                    t = " ".join(table_cols[i]) if i < len(table_cols) else "-"
                    mark = "  " if f == t else "!="
                    lines.append(f"{mark}{i:>3}  {f:<50} {t}")
                raise CheckFailed("\n".join(lines))
        before = int(chk.rows(f"SELECT count() FROM {table}")[0][0])
        chk.run(f"INSERT INTO {table} SELECT * FROM {src}", "CSV", what)
        after = int(chk.rows(f"SELECT count() FROM {table}")[0][0])
        return len(file_cols), after - before

    try:
        ncols, nrows = attempt(path)
    except CheckFailed as e:
        # chdb (like clickhouse-local) normally reads any absolute path; should a
        # build restrict file() to user_files_path, copy the file there and retry.
        msg = str(e)
        if "PATH_ACCESS_DENIED" not in msg and "Code: 291" not in msg:
            raise
        ufd = user_files_dir(chk)
        if not ufd:
            raise
        os.makedirs(ufd, exist_ok=True)
        tmp = tempfile.NamedTemporaryFile(dir=ufd, suffix=".native", delete=False)
        tmp.close()
        try:
            shutil.copyfile(path, tmp.name)
            ncols, nrows = attempt(os.path.basename(tmp.name))
        finally:
            os.unlink(tmp.name)
    sys.stderr.write(
        f"ok: {table} <- {path}: {size} bytes, {ncols} columns, {nrows} rows\n"
    )


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Check ClickHouse DDL and Native files against chdb (embedded ClickHouse)."
    )
    p.add_argument("--ddl", required=True, metavar="FILE.sql")
    p.add_argument("--native", action="append", default=[], metavar="TABLE=FILE.native")
    p.add_argument("--query", action="append", default=[], metavar="SQL")
    p.add_argument(
        "--allow-cast",
        action="store_true",
        help="skip the exact column name/type comparison between a Native file "
        "and its table (ClickHouse then converts positionally, as INSERT SELECT does)",
    )
    args = p.parse_args(argv)
    natives = []
    for spec in args.native:
        table, sep, path = spec.partition("=")
        if not sep or not table or not path:
            p.error(f"--native expects TABLE=FILE, got {spec!r}")
        natives.append((table.strip(), path))
    args.native = natives
    return args


def main(argv):
    args = parse_args(argv)
    try:
        with open(args.ddl, encoding="utf-8") as f:
            ddl = f.read()
    except OSError as e:
        sys.stderr.write(f"FAILED: reading --ddl {args.ddl}: {e}\n")
        return 1

    workdir = tempfile.mkdtemp(prefix="chdb-check.")
    sess = None
    try:
        sess = chs.Session(os.path.join(workdir, "db"))
        chk = Checker(sess)
        version = chk.rows("SELECT version()")[0][0]
        sys.stderr.write(f"chdb version: {version}\n")

        statements = split_statements(ddl)
        for i, stmt in enumerate(statements, 1):
            chk.run(stmt, "CSV", f"DDL statement {i} of {len(statements)} ({args.ddl})")
        sys.stderr.write(f"ok: {len(statements)} DDL statements from {args.ddl}\n")

        for table, path in args.native:
            insert_native(chk, table, path, args.allow_cast)

        for q in args.query:
            out = chk.run(q, "JSONEachRow", "--query").bytes()
            sys.stdout.buffer.write(out)
            sys.stdout.buffer.flush()
        return 0
    except CheckFailed as e:
        sys.stderr.write(str(e) + "\n")
        return 1
    finally:
        if sess is not None:
            try:
                sess.close()
            except Exception:
                pass
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

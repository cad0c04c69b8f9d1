#!/usr/bin/env bash
# Build the wheel into dist/ and write the MySQL DDL of the owned tables to mysql.ddl.sql.
# Warning: json2ddl's DDL starts each table with `drop table if exists`: for a fresh database only.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .build-venv
.build-venv/bin/pip install --quiet --upgrade pip build
.build-venv/bin/pip install --quiet .            # brings the pinned xls2ddl (json2ddl) and sqlor
.build-venv/bin/python -m build --wheel --outdir dist .
.build-venv/bin/json2ddl mysql models/ > mysql.ddl.sql
echo "built: $(ls -t dist/*.whl | head -n 1) and mysql.ddl.sql"

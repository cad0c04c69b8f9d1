#!/usr/bin/env bash
# Build the wheel into dist/ and write the MySQL DDL of the owned tables to mysql.ddl.sql.
# Warning: json2ddl's DDL starts each table with `drop table if exists`.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip install --quiet build xls2ddl==1.1.3
python3 -m build --wheel --outdir dist .
json2ddl mysql models/ > mysql.ddl.sql
echo "built: $(ls dist/*.whl | tail -n 1) and mysql.ddl.sql"

#!/usr/bin/env python3
"""Register pipeline_service's URL paths with rbac roles through the host's set_role_perm.py.

Run from (or point --host-root at) the host's root folder: the one holding
set_role_perm.py (and py3/ with its Python). Every endpoint needs a logged-in user;
the tenant is always the user's organisation, so no path is open to anyone else.

    python scripts/load_path.py --host-root /path/to/host [--dry-run]
    python -m pipeline_service.scripts.load_path --host-root ...   (from an installed wheel)

rbac (check_roles_path in rbac/userperm.py) grants a registered path when it equals
the requested one, or when it ends with ``%`` or ``**`` and the request starts with
what comes before; a wildcard anywhere else is a literal character (``/x/%.dspy``
matches nothing). Every page is therefore listed, as rbac's own load_path.py does:
when a page is added to wwwroot/, add it here (a test compares the two).
"""
import argparse
import os
import subprocess
import sys

MOD = "pipeline_service"
OPERATIONS = ("submit", "list", "detail", "node", "modify", "pause", "resume", "cancel", "dag", "signal",
              "schedule_create", "schedule_list", "schedule_pause", "schedule_resume", "schedule_delete",
              "schedule_run_now")
PAGES = ("index", "menu", "task", "node", "submit", "approve")  # the bricks pages (wwwroot/*.ui)
PATHS_LOGINED = ([f"/{MOD}/{op}.dspy" for op in OPERATIONS]          # the bricks UI's data
                 + [f"/{MOD}/api/{op}.dspy" for op in OPERATIONS]    # the JSON API for scripts
                 + [f"/{MOD}/{page}.ui" for page in PAGES])
PATHS = [("logined", path) for path in PATHS_LOGINED]


def host_python(root):
    candidate = os.path.join(root, "py3", "bin", "python")
    return candidate if os.path.exists(candidate) else sys.executable


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host-root", default=os.environ.get("HOST_ROOT", os.getcwd()))
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    script = os.path.join(args.host_root, "set_role_perm.py")
    if not args.dry_run and not os.path.exists(script):
        print(f"no set_role_perm.py in {args.host_root}: give the host's root with --host-root", file=sys.stderr)
        return 2
    failed = 0
    for role, path in PATHS:
        command = [host_python(args.host_root), script, role, path]
        if args.dry_run:
            print(" ".join(command))
            continue
        done = subprocess.run(command, cwd=args.host_root, capture_output=True, text=True)
        ok = done.returncode == 0
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {role:8} {path}" + ("" if ok else f": {done.stderr.strip()}"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

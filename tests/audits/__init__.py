"""Pass/fail audits of a whole checkout, run as pytest tests behind the `audit` marker (`python -m pytest -m audit`;
`python -m pytest` leaves them out: they take minutes to an hour) and as commands from a checkout's root:

    python -m tests.audits.audit_files --repo PATH     # files and folders the tools touch (issue 18)
    python -m tests.audits.audit_inputs --repo PATH    # hostile inputs: encoding, terminal, cost, malformed (issue 18)
    python -m tests.audits.audit_disk --repo PATH      # trust nothing on disk (issue 27)
    python -m tests.audits.mutations                   # the mutations the suite must catch (issue 17)
    python tests/audits/identical_outputs.py CHECKOUT --manifest M.tsv    # every tool output hashed (issue 26)

Each audit runs the audited checkout's own scripts as subprocesses; nothing of it is imported.
"""

"""What a user runs: a single point (`jobs.run`, with `jobs.build` and `jobs.result`), a scan (`jobs.scan`).

A job takes a validated `dm21cli.io.inputs.JobSpec`, builds the PySCF objects
(`build`), runs the SCF (`dm21cli.scf`), records the result (`result`) and
writes the output directory (`dm21cli.io.outputs`).  Progress goes to a
reporter callback; nothing here prints or exits.
"""

"""dm21cli inside other programs: `dm21cli.integrations.ase` (an ASE calculator)."""

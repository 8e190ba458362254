"""``dm21 schema``: the JSON Schema of job files, for editors that complete and check keys.

The schema comes from the input models (`dm21cli.io.inputs.schema.job_schema`); neither
PySCF nor TensorFlow is imported.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("schema")
@click.option("-o", "--output", default=None, metavar="FILE",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Write the schema to FILE (atomically; an existing FILE is replaced) "
                   "instead of standard output.")
def schema(output: Path | None) -> None:
    """Print the JSON Schema (draft-07) of dm21's YAML job files.

    An editor with the YAML language server (VS Code's YAML extension, and others)
    then completes and checks keys as you type, and shows what each one means, when
    the job file's first line names the schema:

    \b
      # yaml-language-server: $schema=dm21-input.schema.json

    (a path relative to the job file, or a URL).  Every file dm21 accepts is valid
    against it; the chemistry (elements, charge and multiplicity against the atoms,
    basis names) is checked by 'dm21 validate FILE'.

    \b
    Examples:
      dm21 schema -o dm21-input.schema.json
      dm21 schema | jq '.definitions.ScfSettings.properties | keys'
    """
    from dm21cli.io.inputs.schema import schema_text

    text = schema_text()
    if output is None:
        click.echo(text, nl=False)
        return
    from dm21cli.io.outputs.atomic import write_text_atomic

    write_text_atomic(output, text)
    click.echo(f"wrote {output}", err=True)

from matching_cli.cli import app

app(prog_name="matching")

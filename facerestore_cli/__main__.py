from facerestore_cli.cli import console

console()

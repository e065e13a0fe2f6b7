from dpaudit.cli.main import run

run()

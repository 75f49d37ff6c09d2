from progressive_cli.cli.main import main

main()

from maas.cli.main import main

main()

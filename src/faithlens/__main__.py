from faithlens.cli import main

main()

from dcnprobe.cli import main

main()

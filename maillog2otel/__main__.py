from maillog2otel.cli import main

main()

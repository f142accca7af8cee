"""The ``ca-export`` command line: parses options, calls the library, prints, exits."""

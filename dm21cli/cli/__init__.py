"""The ``dm21`` command line: a thin layer of click commands over the library.

`main` holds the group and the one place where errors become one line and an
exit status; one module per subcommand, imported only when it is invoked
(``dm21 --help`` imports neither PySCF nor TensorFlow).  Nothing imports this
package.
"""

package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// runPasswd prints a bcrypt hash of the password on the first line of in, for [agent]
// http_password_hash. The password is read from standard input, not the command line, so that
// it stays out of the shell's history and the process list.
func runPasswd(in io.Reader, stdout, stderr io.Writer) int {
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && err != io.EOF {
		fmt.Fprintln(stderr, "tagpipe passwd:", err)
		return 1
	}
	pass := strings.TrimRight(line, "\r\n")
	if pass == "" {
		fmt.Fprintln(stderr, "tagpipe passwd: no password on standard input (echo -n 'secret' | tagpipe passwd)")
		return 2
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.DefaultCost)
	if err != nil { // longer than bcrypt's 72 bytes
		fmt.Fprintln(stderr, "tagpipe passwd:", err)
		return 2
	}
	fmt.Fprintln(stdout, string(hash))
	return 0
}

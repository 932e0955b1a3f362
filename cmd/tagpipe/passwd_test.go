package main

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func TestPasswd(t *testing.T) {
	var out, errs bytes.Buffer
	if code := runPasswd(strings.NewReader("s3cret pass\n"), &out, &errs); code != 0 {
		t.Fatalf("exit %d: %s", code, errs.String())
	}
	hash := strings.TrimSpace(out.String())
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte("s3cret pass")); err != nil {
		t.Errorf("%q is not a hash of the password: %v", hash, err)
	}
	if strings.Contains(out.String(), "s3cret") {
		t.Error("the password is printed")
	}
	out.Reset()
	if code := runPasswd(strings.NewReader(""), &out, &errs); code != 2 || out.Len() > 0 {
		t.Errorf("no password: exit %d, printed %q", code, out.String())
	}
}

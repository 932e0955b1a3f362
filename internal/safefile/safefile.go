// Package safefile opens the files the agent writes in folders other users might reach: output
// files and disk-buffer segments are opened with O_NOFOLLOW, so that a symbolic link planted in
// the folder (by a user who can write there) does not make the agent — often root — write
// through it to a file of its choosing; and a buffer folder must belong to the agent's user.
//
// Written by hand: the standard library has O_NOFOLLOW but no error that names the refusal, and
// os.Root follows links that stay inside the root.
package safefile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// ErrSymlink is in the error of OpenFile for a path that is a symbolic link.
var ErrSymlink = errors.New("is a symbolic link: refused, a file the agent writes must not be a link (someone who can write in its folder may have planted it)")

// ErrForeignOwner is in the error of OwnDir for a folder another user owns.
var ErrForeignOwner = errors.New("is owned by another user: refused, they could plant or swap files in it")

// OpenFile is os.OpenFile with O_NOFOLLOW: when the last element of path is a symbolic link it
// fails with an error naming path and wrapping ErrSymlink.
func OpenFile(path string, flag int, perm fs.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW, perm)
	if err != nil && errors.Is(err, syscall.ELOOP) {
		if fi, lerr := os.Lstat(path); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
			return nil, fmt.Errorf("%s %w", path, ErrSymlink)
		}
	}
	return f, err
}

// Open opens path for reading, refusing a symbolic link (see OpenFile).
func Open(path string) (*os.File, error) { return OpenFile(path, os.O_RDONLY, 0) }

// OwnDir checks that dir is a folder owned by the user the agent runs as (its effective uid). With
// follow false, dir itself must not be a symbolic link (a folder the agent made); with follow
// true a link is followed (a path an administrator configured) and the folder it leads to is
// checked.
func OwnDir(dir string, follow bool) error {
	stat := os.Lstat
	if follow {
		stat = os.Stat
	}
	fi, err := stat(dir)
	if err != nil {
		return err
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%s %w", dir, ErrSymlink)
	case !fi.IsDir():
		return fmt.Errorf("%s is not a folder", dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil // no owner to check on this system
	}
	if me := os.Geteuid(); int(st.Uid) != me {
		return fmt.Errorf("%s %w (uid %d, the agent runs as uid %d): chown it to uid %d or choose another folder",
			dir, ErrForeignOwner, st.Uid, me, me)
	}
	return nil
}

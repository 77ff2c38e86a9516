// Package atomicfile writes files whole or not at all: the content goes to a temporary file in
// the same folder, which replaces the file at the path only once it is complete and synced
// (and then the folder is synced, so the replacement itself lasts). A crash, a full disk or an
// interrupt mid-write leaves the old file (or none), never half of a new one, and a reader never
// sees one.
package atomicfile

import (
	"bufio"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
)

// Write writes the file at path with what write writes to its writer (buffered). As with
// os.WriteFile, a file that was there keeps its permissions, and a new file gets 0666 less the
// process's umask (0644 under the usual umask 022; 0600 under 077).
// On any error, from write or from the file system, the file at path is left as it was and
// the temporary file is removed; so too on a panic in write, which then goes on.
func Write(path string, write func(io.Writer) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := createTemp(dir, base)
	if err != nil {
		return err
	}
	tmp := f.Name()
	renamed := false
	defer func() {
		if !renamed { // an error, or a panic in write: no trace of the temporary file
			_ = f.Close() // a second Close only says the file is closed
			_ = os.Remove(tmp)
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	err = write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if st, serr := os.Stat(path); err == nil && serr == nil && st.Mode().IsRegular() {
		err = f.Chmod(st.Mode().Perm()) // the replaced file's permissions, as os.WriteFile keeps them
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	renamed = err == nil
	if renamed {
		syncDir(dir)
	}
	return err
}

// createTemp creates a new file .base.tmpN in dir, as os.CreateTemp does but with mode 0666
// less the umask, which CreateTemp's 0600 would not give (it used to be set to 0644 after,
// whatever the umask).
func createTemp(dir, base string) (*os.File, error) {
	for range 100 {
		name := filepath.Join(dir, "."+base+".tmp"+strconv.FormatUint(rand.Uint64(), 36))
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return f, err
	}
	return nil, &fs.PathError{Op: "createtemp", Path: filepath.Join(dir, "."+base+".tmp*"), Err: fs.ErrExist}
}

// syncDir makes the rename durable: until the folder's entry reaches the disk, a power loss
// right after Write returns may bring back the old file (or none). The file at path is whole
// either way, so a folder that cannot be synced (a file system that does not support it) is
// not an error.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

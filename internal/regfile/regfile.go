// Package regfile opens and reads files that must be regular files. Anything else is refused
// before it is opened: a named pipe would block the open until a writer comes (forever if none
// does), and a device such as /dev/zero would never end a read.
package regfile

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
)

var (
	// ErrNotRegular marks the error for a path that is not a regular file.
	ErrNotRegular = errors.New("not a regular file")
	// ErrTooLarge marks the error for a file larger than ReadFile's limit.
	ErrTooLarge = errors.New("larger than")
)

// Open opens the file at path for reading if it is a regular file (a link is followed). A path
// that is not one gives "<path>: not a regular file (mode …)", wrapping ErrNotRegular; the
// errors of os.Stat and os.Open are returned as they are.
func Open(path string) (*os.File, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w (mode %v)", path, ErrNotRegular, st.Mode())
	}
	return os.Open(path)
}

// ReadFile reads the regular file at path (as Open) of at most limit bytes. A larger one gives
// "<path>: larger than <limit> bytes", wrapping ErrTooLarge, after reading no more than
// limit+1 bytes of it.
// A negative limit is an error; math.MaxInt64 reads the whole file (limit+1 wrapped around
// to a negative count, which read nothing).
func ReadFile(path string, limit int64) ([]byte, error) {
	if limit < 0 {
		return nil, fmt.Errorf("%s: a read limit of %d bytes", path, limit)
	}
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, min(limit, math.MaxInt64-1)+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: %w %d bytes", path, ErrTooLarge, limit)
	}
	return b, nil
}

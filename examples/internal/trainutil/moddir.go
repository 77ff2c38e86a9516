package trainutil

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
)

// ModuleDir returns the directory of a module in the module cache, so that a
// program can read data files that a dependency ships. It tries, in order:
// the module version recorded in the binary's build information joined with
// GOMODCACHE, then `go list -m` run in the current directory.
func ModuleDir(path string) (string, error) {
	var errs []error
	if dir, err := moduleDirFromBuildInfo(path); err == nil {
		return dir, nil
	} else {
		errs = append(errs, err)
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", path).Output()
	if err == nil {
		dir := strings.TrimSpace(string(out))
		if dir != "" {
			if _, err := os.Stat(dir); err == nil {
				return dir, nil
			}
		}
		errs = append(errs, fmt.Errorf("go list -m %s: no module directory (run `go mod download %s`)", path, path))
	} else {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
		}
		errs = append(errs, fmt.Errorf("go list -m %s: %w", path, err))
	}
	return "", fmt.Errorf("trainutil: cannot find module %s: %w", path, errors.Join(errs...))
}

func moduleDirFromBuildInfo(path string) (string, error) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "", errors.New("no build info")
	}
	version := ""
	for _, d := range bi.Deps {
		if d.Path == path {
			version = d.Version
			if d.Replace != nil {
				if d.Replace.Version == "" { // local replacement
					return d.Replace.Path, nil
				}
				path, version = d.Replace.Path, d.Replace.Version
			}
			break
		}
	}
	if version == "" {
		return "", fmt.Errorf("%s not in build info", path)
	}
	cache, err := modCache()
	if err != nil {
		return "", err
	}
	esc, err := escapePath(path)
	if err != nil {
		return "", err
	}
	escv, err := escapePath(version)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, filepath.FromSlash(esc)+"@"+escv)
	if _, err := os.Stat(dir); err != nil {
		return "", err
	}
	return dir, nil
}

func modCache() (string, error) {
	if c := os.Getenv("GOMODCACHE"); c != "" {
		return c, nil
	}
	if out, err := exec.Command("go", "env", "GOMODCACHE").Output(); err == nil {
		if c := strings.TrimSpace(string(out)); c != "" {
			return c, nil
		}
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		gopath = filepath.Join(home, "go")
	}
	return filepath.Join(filepath.SplitList(gopath)[0], "pkg", "mod"), nil
}

// escapePath applies the module cache's case encoding: each upper-case
// letter becomes '!' followed by its lower-case form.
func escapePath(s string) (string, error) {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '!':
			return "", fmt.Errorf("invalid module path %q", s)
		case 'A' <= r && r <= 'Z':
			b.WriteByte('!')
			b.WriteRune(r + 'a' - 'A')
		default:
			b.WriteRune(r)
		}
	}
	return b.String(), nil
}

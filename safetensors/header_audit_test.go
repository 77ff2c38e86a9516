package safetensors

import (
	"strings"
	"testing"
)

// TestParseRejectsNonUTF8Header: the header must be UTF-8 (the reference reader refuses
// anything else); encoding/json replaced bad bytes by U+FFFD, renaming the tensor silently.
func TestParseRejectsNonUTF8Header(t *testing.T) {
	_, err := Parse(rawFile("{\"a\xff\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,2]}}", le(uint16(1))))
	if err == nil || !strings.Contains(err.Error(), "not a safetensors file: header is not UTF-8") {
		t.Errorf("got %v; want a not-UTF-8 error", err)
	}
}

// TestParseEmptyHeader: an 8-byte file whose header length is 0 is "not a safetensors file"
// for Parse as for Open (Parse said "gomoe: safetensors: EOF").
func TestParseEmptyHeader(t *testing.T) {
	if _, err := Parse(make([]byte, 8)); err == nil || !strings.Contains(err.Error(), "not a safetensors file") {
		t.Errorf("got %v; want a not-a-safetensors-file error", err)
	}
}

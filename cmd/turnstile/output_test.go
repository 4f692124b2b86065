package main

import (
	"bytes"
	"testing"
	"time"
)

func TestFormatAge(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		ago  time.Duration
		want string
	}{
		{0, "0s"}, {-time.Second, "0s"}, {45 * time.Second, "45s"}, {12 * time.Minute, "12m"},
		{3*time.Hour + 5*time.Minute, "3h5m"}, {3 * time.Hour, "3h"}, {11*time.Hour + 5*time.Minute, "11h"}, {50 * time.Hour, "2d"},
	} {
		at := now.Add(-tc.ago)
		if got := formatAge(&at, now); got != tc.want {
			t.Errorf("%v ago: %q, want %q", tc.ago, got, tc.want)
		}
	}
	if got := formatAge(nil, now); got != "-" {
		t.Errorf("no time: %q, want -", got)
	}
}

// TestLiveTable: rows written one by one line up with the widest cell
// seen so far.
func TestLiveTable(t *testing.T) {
	var b bytes.Buffer
	lt := &liveTable{w: &b}
	lt.add([]string{"SEQ", "EVENT"}, []string{"1", "created"})
	for _, r := range [][]string{{"SEQ", "EVENT"}, {"1", "created"}, {"10", "provisioned"}} {
		if err := lt.row(r...); err != nil {
			t.Fatal(err)
		}
	}
	want := "SEQ  EVENT\n1    created\n10   provisioned\n"
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}

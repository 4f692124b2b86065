package events

import (
	"slices"
	"testing"
)

// The sequencer hands messages on in stream order, takes one that came a
// place late (the ordered consumer's subscription handover), drops
// repeats, and passes holes (expired outcomes): a message after a hole is
// held until the next says whether one was late or missing.
func TestSequencer(t *testing.T) {
	seqs := func(rs []RawMsg) []uint64 {
		var out []uint64
		for _, r := range rs {
			out = append(out, r.StreamSeq)
		}
		return out
	}
	for _, tc := range []struct {
		in, want []uint64 // delivered; handed on before a flush
		held     uint64   // held at the end (0: none)
	}{
		{in: []uint64{1, 2, 3}, want: []uint64{1, 2, 3}},
		{in: []uint64{2, 1, 3}, want: []uint64{1, 2, 3}},
		{in: []uint64{1, 3, 2, 4}, want: []uint64{1, 2, 3, 4}},
		{in: []uint64{1, 2, 2, 1, 3}, want: []uint64{1, 2, 3}},
		{in: []uint64{1, 3, 4}, want: []uint64{1, 3, 4}},
		{in: []uint64{1, 3, 5, 4, 6}, want: []uint64{1, 3, 4, 5, 6}},
		{in: []uint64{1, 3, 5, 7}, want: []uint64{1, 3, 5}, held: 7},
		{in: []uint64{3}, held: 3},
		{in: []uint64{2, 3}, want: []uint64{2, 3}},
		{in: []uint64{4, 4, 2, 4, 5}, want: []uint64{2, 4, 5}},
	} {
		var s sequencer
		var got []RawMsg
		for _, q := range tc.in {
			got = s.add(RawMsg{StreamSeq: q}, got)
		}
		var held uint64
		if s.held != nil {
			held = s.held.StreamSeq
		}
		if !slices.Equal(seqs(got), tc.want) || held != tc.held {
			t.Errorf("%v: handed %v, held %d; want %v, held %d", tc.in, seqs(got), held, tc.want, tc.held)
		}
		if got = s.flush(got); held != 0 && seqs(got)[len(got)-1] != held {
			t.Errorf("%v: flush handed %v, want %d last", tc.in, seqs(got), held)
		}
	}
}

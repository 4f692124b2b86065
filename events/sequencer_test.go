package events

import (
	"errors"
	"slices"
	"testing"
)

// The sequencer hands messages on in stream order, takes one that came a
// place early (the ordered consumer's subscription handover), drops
// repeats, and calls anything else a gap.
func TestSequencer(t *testing.T) {
	seqs := func(rs []RawMsg) []uint64 {
		var out []uint64
		for _, r := range rs {
			out = append(out, r.StreamSeq)
		}
		return out
	}
	feed := func(in ...uint64) ([]uint64, error) {
		s := sequencer{want: 1}
		var got []RawMsg
		for _, q := range in {
			var err error
			if got, err = s.add(RawMsg{StreamSeq: q}, got); err != nil {
				return seqs(got), err
			}
		}
		return seqs(got), nil
	}
	for _, tc := range []struct {
		in   []uint64
		want []uint64
		gap  bool
	}{
		{in: []uint64{1, 2, 3}, want: []uint64{1, 2, 3}},
		{in: []uint64{2, 1, 3}, want: []uint64{1, 2, 3}},
		{in: []uint64{1, 3, 2, 4}, want: []uint64{1, 2, 3, 4}},
		{in: []uint64{1, 2, 2, 1, 3}, want: []uint64{1, 2, 3}},
		{in: []uint64{1, 3, 4}, want: []uint64{1}, gap: true},
		{in: []uint64{3}, gap: true},
		{in: []uint64{2, 3}, gap: true},
	} {
		got, err := feed(tc.in...)
		if tc.gap != errors.Is(err, ErrGap) || !slices.Equal(got, tc.want) {
			t.Errorf("%v: got %v, %v; want %v (gap %v)", tc.in, got, err, tc.want, tc.gap)
		}
	}
}

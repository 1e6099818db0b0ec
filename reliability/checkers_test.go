package reliability

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The suite's checks must be able to fail: each is fed a violation.
func TestCheckersCatchViolations(t *testing.T) {
	// Partition 0 holds ids 0..3 at offsets 0..3.
	var recs []*kgo.Record
	for i := range 4 {
		recs = append(recs, &kgo.Record{Partition: 0, Offset: int64(i), Value: []byte(id(i))})
	}
	lay := layoutOf(recs)
	first := map[string]int64{id(0): 1, id(1): 2, id(2): 5} // id(3) never processed

	t.Run("commit covers an unprocessed record", func(t *testing.T) {
		ok := []commitSnap{{offsets: map[int32]int64{0: 2}, counter: 2}, {offsets: map[int32]int64{0: 3}, counter: 5}}
		if bad := checkCommittedProcessed(ok, lay, first); len(bad) != 0 {
			t.Fatalf("false alarm: %v", bad)
		}
		for _, s := range []commitSnap{
			{offsets: map[int32]int64{0: 3}, counter: 4}, // offset 2 processed only at #5
			{offsets: map[int32]int64{0: 4}, counter: 9}, // offset 3 never processed
			{offsets: map[int32]int64{0: 9}, counter: 9}, // beyond the end
		} {
			if bad := checkCommittedProcessed([]commitSnap{s}, lay, first); len(bad) != 1 {
				t.Errorf("%v: %d violations reported, want 1", s, len(bad))
			}
		}
	})

	t.Run("order within a run", func(t *testing.T) {
		l := newTally()
		for i := range 12 {
			l.result(id(i), nil)
		}
		const keys = 3 // key k: ids k, k+3, k+6, k+9
		run := func(ids ...int) func(func(string, []int) bool) {
			return func(yield func(string, []int) bool) { yield("m", ids) }
		}
		if bad := checkRunOrder(run(0, 1, 3, 4, 6, 9), l, keys); len(bad) != 0 {
			t.Fatalf("false alarm: %v", bad)
		}
		if bad := checkRunOrder(run(0, 6), l, keys); len(bad) != 1 { // skips 3
			t.Errorf("gap: %v", bad)
		}
		if bad := checkRunOrder(run(3, 0), l, keys); len(bad) != 1 { // backwards
			t.Errorf("reorder: %v", bad)
		}
	})

	t.Run("commit by a member that does not own the partition", func(t *testing.T) {
		a := &commitAudit{
			owners:  map[int32]map[int32]string{3: {0: "B"}},
			members: map[int32]map[string]bool{3: {"A": true, "B": true}},
		}
		a.commits = []auditedCommit{
			{member: "B", gen: 3, at: time.Now(), parts: map[int32]int64{0: 5}}, // owner
			{member: "A", gen: 2, at: time.Now(), parts: map[int32]int64{0: 5}}, // refused by the broker
			{member: "A", gen: 3, at: time.Now(), parts: map[int32]int64{1: 5}}, // nobody owns 1
			{member: "A", gen: 3, at: time.Now(), parts: map[int32]int64{0: 5}}, // B owns 0
			{member: "Z", gen: 3, at: time.Now(), parts: map[int32]int64{0: 5}}, // unknown member
		}
		n, bad := a.check()
		if n != 3 || len(bad) != 1 {
			t.Fatalf("%d accepted, violations %v; want 3 and one", n, bad)
		}
	})
}

package main

import (
	"bufio"
	"encoding/json"
	"io"
	"strings"
	"unicode/utf8"
)

// Writers for listings printed as they arrive (imgcache ls of a million
// images), so that a listing is never held whole.

// jsonArray prints values as one indented JSON array, the same text
// printJSON gives for a slice of them, a value at a time.
type jsonArray struct {
	w *bufio.Writer
	n int
}

func newJSONArray(w io.Writer) *jsonArray { return &jsonArray{w: bufio.NewWriter(w)} }

func (a *jsonArray) add(v any) error {
	b, err := json.MarshalIndent(v, "  ", "  ")
	if err != nil {
		return err
	}
	if a.n == 0 {
		a.w.WriteString("[\n  ")
	} else {
		a.w.WriteString(",\n  ")
	}
	a.n++
	_, err = a.w.Write(b)
	return err
}

// close ends the array ([] if it had no value) and flushes it.
func (a *jsonArray) close() error {
	if a.n == 0 {
		a.w.WriteString("[]\n")
	} else {
		a.w.WriteString("\n]\n")
	}
	return a.w.Flush()
}

// tableBlock is how many rows a table holds before it prints them.
const tableBlock = 1024

// table prints rows of tab-separated cells, all with as many cells, as
// text/tabwriter does with padding 2 (each cell but a row's last padded
// to its column's width and 2 more), a block of rows at a time. The
// widths are set by the first block (and at least min): a wider cell in
// a later block pushes the cells after it right, in its own row only
// (while there is a column it can take the room of), where tabwriter
// would have widened the column in every row, which a stream cannot.
type table struct {
	w      *bufio.Writer
	widths []int // set by the first block printed
	min    []int
	rows   [][]string
}

// newTable makes a table whose columns are at least min wide.
func newTable(w io.Writer, min ...int) *table { return &table{w: bufio.NewWriter(w), min: min} }

// row adds a row of tab-separated cells.
func (t *table) row(line string) error {
	t.rows = append(t.rows, strings.Split(line, "\t"))
	if len(t.rows) == tableBlock {
		return t.flush()
	}
	return nil
}

// flush prints the rows held.
func (t *table) flush() error {
	if t.widths == nil && len(t.rows) > 0 {
		t.widths = make([]int, len(t.rows[0])-1)
		copy(t.widths, t.min)
		for _, r := range t.rows {
			for i, cell := range r[:len(r)-1] {
				t.widths[i] = max(t.widths[i], utf8.RuneCountInString(cell))
			}
		}
	}
	for _, r := range t.rows {
		at, stop := 0, 0 // where the row's text ends; where the next cell should start
		for i, cell := range r {
			if i > 0 {
				pad := max(2, stop-at)
				t.w.WriteString(strings.Repeat(" ", pad))
				at += pad
			}
			t.w.WriteString(cell)
			at += utf8.RuneCountInString(cell)
			if i < len(t.widths) {
				stop += t.widths[i] + 2
			}
		}
		t.w.WriteByte('\n')
	}
	t.rows = t.rows[:0]
	return t.w.Flush()
}

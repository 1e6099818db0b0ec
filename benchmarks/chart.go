package main

import (
	"fmt"
	"image/color"
	"math"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var clientColors = map[string]color.Color{
	clientMQ:      color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	clientRaw:     color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	clientKafkaGo: color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	clientSarama:  color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	clientJava:    color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff},
}

// writeChart draws three panels: throughput by kind and client, latency
// percentiles by rate, and the I/O-bound handler.
func writeChart(path string, r *report) error {
	panels := []*plot.Plot{throughputPlot(r)}
	if len(r.Latency) > 0 {
		panels = append(panels, latencyPlot(r))
	}
	if r.IOBound != nil {
		panels = append(panels, ioPlot(r))
	}
	widths := vg.Length(0)
	for i := range panels {
		if i == 0 {
			widths += 7 * vg.Inch
		} else {
			widths += 4.5 * vg.Inch
		}
	}
	img := vgimg.New(widths, 5*vg.Inch)
	dc := draw.New(img)
	// Tiles are equal; lay the panels out by hand to give the first more room.
	x := vg.Length(0)
	for i, p := range panels {
		w := 4.5 * vg.Inch
		if i == 0 {
			w = 7 * vg.Inch
		}
		c := draw.Crop(dc, x, x+w-widths, 0, 0)
		p.Draw(c)
		x += w
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func throughputPlot(r *report) *plot.Plot {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Throughput, %s\n%d x %d B, %d partitions, median of %d rounds",
		r.Machine.Broker, r.Config.Msgs, r.Config.ValueBytes, r.Config.Partitions, r.Config.Rounds)
	p.Y.Label.Text = "k msg/s"
	kinds := []string{kindProduce, kindSync, kindConsume}
	clients := []string{clientMQ, clientRaw, clientKafkaGo, clientSarama, clientJava}
	var present []string
	for _, c := range clients {
		for _, t := range r.Throughput {
			if t.Client == c {
				present = append(present, c)
				break
			}
		}
	}
	w := vg.Points(14)
	for i, c := range present {
		vals := make(plotter.Values, len(kinds))
		for k, kind := range kinds {
			for _, t := range r.Throughput {
				if t.Kind == kind && t.Client == c {
					vals[k] = t.MsgsPerSec / 1000
				}
			}
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			continue
		}
		bars.Color = clientColors[c]
		bars.LineStyle.Width = 0
		bars.Offset = w * vg.Length(float64(i)-float64(len(present)-1)/2)
		p.Add(bars)
		p.Legend.Add(c, bars)
	}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs = vg.Points(40)
	p.NominalX("async produce", fmt.Sprintf("SendSync x%d", r.Config.SyncConcurrency), "consume (marks on)")
	p.Y.Min = 0
	return p
}

func latencyPlot(r *report) *plot.Plot {
	p := plot.New()
	p.Title.Text = "End-to-end latency (produce -> callback)"
	p.X.Label.Text = "rate, msg/s"
	p.Y.Label.Text = "ms (log)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	var rates []int
	seen := map[int]bool{}
	for _, l := range r.Latency {
		if !seen[l.Target] {
			seen[l.Target] = true
			rates = append(rates, l.Target)
		}
	}
	names := make([]string, len(rates))
	for i, rt := range rates {
		names[i] = fmt.Sprintf("%dk", rt/1000)
		if rt < 1000 {
			names[i] = fmt.Sprint(rt)
		}
	}
	dashes := map[string][]vg.Length{"p50": nil, "p99": {vg.Points(5), vg.Points(3)}, "p99.9": {vg.Points(1), vg.Points(3)}}
	for _, client := range []string{clientMQ, clientRaw} {
		for _, q := range []string{"p50", "p99", "p99.9"} {
			var pts plotter.XYs
			for i, rt := range rates {
				for _, l := range r.Latency {
					if l.Client != client || l.Target != rt {
						continue
					}
					v := map[string]float64{"p50": l.P50ms, "p99": l.P99ms, "p99.9": l.P999ms}[q]
					pts = append(pts, plotter.XY{X: float64(i), Y: math.Max(v, 0.01)})
				}
			}
			if len(pts) == 0 {
				continue
			}
			line, points, err := plotter.NewLinePoints(pts)
			if err != nil {
				continue
			}
			line.Color, points.Color = clientColors[client], clientColors[client]
			line.Dashes = dashes[q]
			p.Add(line, points)
			p.Legend.Add(client+" "+q, line, points)
		}
	}
	p.Legend.Top = true
	p.Legend.Left = true
	p.NominalX(names...)
	return p
}

func ioPlot(r *report) *plot.Plot {
	io := r.IOBound
	p := plot.New()
	p.Title.Text = fmt.Sprintf("I/O-bound handler (%.0f ms/msg, %d partitions)\nmq / serial loop = %.1fx", io.SleepMs, io.Partitions, io.Ratio)
	p.Y.Label.Text = "msg/s"
	w := vg.Points(40)
	for i, v := range []struct {
		name string
		val  float64
		c    color.Color
	}{{"mq workers", io.MQMsgsPerSec, clientColors[clientMQ]}, {"franz-go serial loop", io.RawMsgsPerSec, clientColors[clientRaw]}} {
		vals := make(plotter.Values, 2)
		vals[i] = v.val
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			continue
		}
		bars.Color = v.c
		bars.LineStyle.Width = 0
		p.Add(bars)
	}
	p.NominalX("mq workers", "franz-go serial loop")
	p.Y.Min = 0
	return p
}

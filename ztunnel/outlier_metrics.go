package ztunnel

import "github.com/prometheus/client_golang/prometheus"

var (
	outlierEjectionsDesc = prometheus.NewDesc("ztunnel_outlier_ejections_total",
		"Hosts ejected by outlier detection, by service, subset and the detector that fired (not in the reference)",
		[]string{"service", "subset", "reason"}, nil)
	outlierOverflowDesc = prometheus.NewDesc("ztunnel_outlier_ejections_overflow_total",
		"Ejections that outlier detection refused because of maxEjectionPercent (not in the reference)",
		[]string{"service", "subset"}, nil)
	outlierEjectedDesc = prometheus.NewDesc("ztunnel_outlier_ejected_hosts",
		"Hosts ejected by outlier detection now (not in the reference)",
		[]string{"service", "subset"}, nil)
)

// outlierCollector exports the outlier detector's counters and ejected hosts, read at scrape
// time. The series of a cluster go with its state (outlierDetector.tick forgets a cluster whose
// hosts were all forgotten); a cluster seen again starts from zero, which Prometheus reads as a
// counter reset.
type outlierCollector struct {
	d *outlierDetector
}

var _ prometheus.Collector = (*outlierCollector)(nil)

func (c *outlierCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- outlierEjectionsDesc
	ch <- outlierOverflowDesc
	ch <- outlierEjectedDesc
}

func (c *outlierCollector) Collect(ch chan<- prometheus.Metric) {
	if c.d == nil {
		return
	}
	type row struct {
		key       clusterKey
		ejections [numEjectReasons]uint64
		overflow  uint64
		active    int
	}
	c.d.mu.Lock()
	rows := make([]row, 0, len(c.d.clusters))
	for k, cs := range c.d.clusters {
		rows = append(rows, row{key: k, ejections: cs.ejections, overflow: cs.overflow, active: cs.active})
	}
	c.d.mu.Unlock()
	for _, r := range rows { // sending may block on the registry: not under the detector's lock
		for reason, n := range r.ejections {
			ch <- constMetric(outlierEjectionsDesc, prometheus.CounterValue, float64(n),
				r.key.service, r.key.subset, ejectReason(reason).String())
		}
		ch <- constMetric(outlierOverflowDesc, prometheus.CounterValue, float64(r.overflow), r.key.service, r.key.subset)
		ch <- constMetric(outlierEjectedDesc, prometheus.GaugeValue, float64(r.active), r.key.service, r.key.subset)
	}
}

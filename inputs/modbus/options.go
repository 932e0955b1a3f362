package modbus

import (
	"cmp"
	"fmt"
	"math"
	"reflect"
	"strings"
	"time"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/resilience"
)

// Options are the settings a device may have. At the top of [[inputs.modbus]] they are the
// defaults of every device; in a [[inputs.modbus.profile]] they are the defaults of the devices
// of that profile; in a [[inputs.modbus.device]] they are that device's. A nil pointer (an empty
// mode) means "not set here".
type Options struct {
	// TransmissionMode: auto (by the controller's scheme: tcp:// and tls:// speak Modbus TCP,
	// file:// RTU), tcp, rtuovertcp, asciiovertcp, rtu, ascii.
	TransmissionMode string `toml:"transmission_mode"`

	// Adaptive timeout: clamp(timeout_min, timeout_max, EWMA(round trips)·timeout_factor +
	// jitter), with the EWMA weighing the newest round trip rtt_alpha. TimeoutMax is also the
	// timeout of connecting and of the first request; Timeout is its older name.
	Timeout       *config.Duration `toml:"timeout"`
	TimeoutMax    *config.Duration `toml:"timeout_max"`
	TimeoutMin    *config.Duration `toml:"timeout_min"`
	TimeoutFactor *float64         `toml:"timeout_factor"`
	TimeoutJitter *config.Duration `toml:"timeout_jitter"`
	RTTAlpha      *float64         `toml:"rtt_alpha"`

	// Retries of a request that timed out or came back garbled: the first at once, then
	// RetryWait, growing by RetryMultiplier up to RetryWaitMax, each ±RetryJitter; never past
	// the device's next poll.
	Retries         *int             `toml:"retries"`
	RetryWait       *config.Duration `toml:"retry_wait"`
	RetryWaitMax    *config.Duration `toml:"retry_wait_max"`
	RetryMultiplier *float64         `toml:"retry_multiplier"`
	RetryJitter     *float64         `toml:"retry_jitter"`

	// The connection (the same for every device on one controller): TCP keep-alive, closing it
	// when it would stay unused longer than IdleTimeout, reconnect backoff.
	KeepAlive    *config.Duration `toml:"tcp_keep_alive"`
	IdleTimeout  *config.Duration `toml:"idle_timeout"`
	ReconnectMin *config.Duration `toml:"reconnect_min"`
	ReconnectMax *config.Duration `toml:"reconnect_max"`

	// Token buckets: requests per second and burst on one connection (a gateway, a serial
	// line) and of one device; 0: no cap.
	MaxRequestsPerSecond    *float64 `toml:"max_requests_per_second"`
	MaxRequestsBurst        *int     `toml:"max_requests_burst"`
	DeviceRequestsPerSecond *float64 `toml:"device_requests_per_second"`
	DeviceRequestsBurst     *int     `toml:"device_requests_burst"`

	// Circuit breaker of each device on each controller: it opens after BreakerFailures polls
	// in a row with no answer, or when BreakerFailureRate of at least BreakerMinRequests polls
	// in BreakerWindow got none; after BreakerCoolDown, BreakerProbes polls probe the device.
	BreakerFailures    *int             `toml:"breaker_failures"`
	BreakerFailureRate *float64         `toml:"breaker_failure_rate"`
	BreakerWindow      *config.Duration `toml:"breaker_window"`
	BreakerMinRequests *int             `toml:"breaker_min_requests"`
	BreakerCoolDown    *config.Duration `toml:"breaker_cool_down"`
	BreakerProbes      *int             `toml:"breaker_probes"`

	// Degrading: split a read that keeps failing to isolate the bad range; report the last good
	// value of a field that failed, tagged quality=stale, for at most StaleAfter.
	SplitFailingReads *bool            `toml:"split_failing_reads"`
	StaleAfter        *config.Duration `toml:"stale_after"`
	// HealthMetric: a modbus_health metric per device and poll.
	HealthMetric *bool `toml:"health_metric"`

	// MaxGap is how many unread registers (bits) one request may span between two fields.
	MaxGap              *int `toml:"max_gap"`
	MaxRequestRegisters *int `toml:"max_request_registers"`
	MaxRequestBits      *int `toml:"max_request_bits"`
	// Device quirks.
	PauseAfterConnect    *config.Duration `toml:"pause_after_connect"`
	PauseBetweenRequests *config.Duration `toml:"pause_between_requests"`
	CloseAfterGather     *bool            `toml:"close_connection_after_gather"`
	OneRequestPerField   *bool            `toml:"one_request_per_field"`
	ReadCoilsFromZero    *bool            `toml:"read_coils_starting_at_zero"`
	BusyRetries          *int             `toml:"busy_retries"`
	BusyRetriesWait      *config.Duration `toml:"busy_retries_wait"`
}

// defaults are what a device gets for every option that neither it, its profile nor the plugin
// sets: the one default set, whose values sample.conf names. Those shared with other plugins
// come from internal/resilience. A nil here is derived from other options (resolve): timeout_min
// (at most timeout_max), retry_wait_max (at least retry_wait) and reconnect_max (half the
// breaker's cool-down).
var defaults = Options{
	TimeoutMax:    ptr(config.Duration(resilience.DefaultTimeout.Max)),
	TimeoutFactor: ptr(resilience.DefaultTimeout.Factor),
	TimeoutJitter: ptr(config.Duration(resilience.DefaultTimeout.Jitter)),
	RTTAlpha:      ptr(resilience.DefaultTimeout.Alpha),

	Retries:         ptr(resilience.DefaultRetry.Retries),
	RetryWait:       ptr(config.Duration(resilience.DefaultRetry.Initial)),
	RetryMultiplier: ptr(resilience.DefaultRetry.Multiplier),
	RetryJitter:     ptr(resilience.DefaultRetry.Jitter),

	KeepAlive:    ptr(config.Duration(15 * time.Second)),
	IdleTimeout:  ptr(config.Duration(time.Minute)),
	ReconnectMin: ptr(config.Duration(100 * time.Millisecond)),

	MaxRequestsPerSecond:    ptr(0.0),
	MaxRequestsBurst:        ptr(1),
	DeviceRequestsPerSecond: ptr(0.0),
	DeviceRequestsBurst:     ptr(1),

	BreakerFailures:    ptr(resilience.DefaultBreaker.Failures),
	BreakerFailureRate: ptr(0.0),
	BreakerWindow:      ptr(config.Duration(resilience.DefaultBreaker.Window)),
	BreakerMinRequests: ptr(resilience.DefaultBreaker.MinRequests),
	BreakerCoolDown:    ptr(config.Duration(resilience.DefaultBreaker.CoolDown)),
	BreakerProbes:      ptr(resilience.DefaultBreaker.Probes),

	SplitFailingReads: ptr(true),
	StaleAfter:        ptr(config.Duration(0)),
	HealthMetric:      ptr(true),

	MaxGap:              ptr(0),
	MaxRequestRegisters: ptr(maxRegisters),
	MaxRequestBits:      ptr(maxBits),

	PauseAfterConnect:    ptr(config.Duration(0)),
	PauseBetweenRequests: ptr(config.Duration(0)),
	CloseAfterGather:     ptr(false),
	OneRequestPerField:   ptr(false),
	ReadCoilsFromZero:    ptr(false),
	BusyRetries:          ptr(0),
	BusyRetriesWait:      ptr(config.Duration(100 * time.Millisecond)),
}

// defaultTimeoutMin is timeout_min unless timeout_max is smaller; defaultRetryWaitMax is
// retry_wait_max unless retry_wait is larger.
var (
	defaultTimeoutMin   = resilience.DefaultTimeout.Min
	defaultRetryWaitMax = resilience.DefaultRetry.Max
)

const (
	defaultMeasure  = "modbus"
	defaultBaudRate = 19200
	// splitAfter is how many polls in a row a read must time out (while the device answers
	// other reads) or get exception 4 before it is split.
	splitAfter = 2
)

func ptr[T any](v T) *T { return &v }

// deviceOptions are a device's Options resolved against the profile's, the plugin's and the
// built-in defaults. Devices with the same options share one (Init interns them): at 10,000
// devices a copy each was 3.7 MB.
type deviceOptions struct {
	timeout          resilience.TimeoutConfig
	retry            resilience.RetryConfig
	link             linkOptions
	deviceRate       float64
	deviceBurst      int
	breaker          breakerOptions
	splitReads       bool
	staleAfter       time.Duration
	health           bool
	pauseAfterConn   time.Duration
	pauseBetween     time.Duration
	closeAfterGather bool
	busyRetries      int
	busyWait         time.Duration
	plan             planOptions
}

// breakerOptions are resilience.BreakerConfig without its functions (which newDevice adds), so
// that deviceOptions can be compared.
type breakerOptions struct {
	failures    int
	rate        float64
	minRequests int
	window      time.Duration
	coolDown    time.Duration
	probes      int
}

func (b breakerOptions) config() resilience.BreakerConfig {
	return resilience.BreakerConfig{Failures: b.failures, FailureRate: b.rate, MinRequests: b.minRequests,
		Window: b.window, CoolDown: b.coolDown, Probes: b.probes}
}

// lineOptions are the settings of one connection: every device on a controller must agree.
type linkOptions struct {
	keepAlive    time.Duration
	idleTimeout  time.Duration
	reconnectMin time.Duration
	reconnectMax time.Duration
	rate         float64
	burst        int
}

func intOr(p *int, def int) int {
	if p != nil {
		return *p
	}
	return def
}

func keyOf(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// check validates the values set in o; prefix is "" at the top, "profile[N]" or "device[N]".
func (o *Options) check(prefix string) error {
	key := func(field any) string { return keyOf(prefix, o.fieldKey(field)) }
	if o.TransmissionMode != "" {
		if _, ok := modes[strings.ToLower(o.TransmissionMode)]; !ok {
			return config.KeyErrorf(key(&o.TransmissionMode), "%q: want auto, tcp, rtuovertcp, asciiovertcp, rtu or ascii", o.TransmissionMode)
		}
	}
	if o.Timeout != nil && o.TimeoutMax != nil {
		return config.KeyErrorf(key(&o.Timeout), "timeout is the older name of timeout_max: set one of them")
	}
	// Why each bound: the protocol caps a read at 125 registers and 2000 bits; a gap wider than
	// a whole request cannot be read in one; retries beyond 10 only delay the other devices of a
	// gateway; a breaker that needs more than 1000 failures never protects anything.
	for _, c := range []struct {
		field    **int
		min, max int
	}{
		{&o.Retries, 0, 10},
		{&o.MaxGap, 0, maxBits - 1},
		{&o.MaxRequestRegisters, 1, maxRegisters},
		{&o.MaxRequestBits, 1, maxBits},
		{&o.BusyRetries, 0, 100},
		{&o.BreakerFailures, 0, 1000},
		{&o.BreakerMinRequests, 1, 100000},
		{&o.BreakerProbes, 1, 100},
		{&o.MaxRequestsBurst, 1, 10000},
		{&o.DeviceRequestsBurst, 1, 10000},
	} {
		if p := *c.field; p != nil && (*p < c.min || *p > c.max) {
			return config.KeyErrorf(key(c.field), "%d: must be %d..%d", *p, c.min, c.max)
		}
	}
	for _, c := range []struct {
		field    **float64
		min, max float64
		what     string
	}{
		{&o.TimeoutFactor, 1, 100, "1 (the average round trip) or more"},
		{&o.RTTAlpha, 0.001, 1, "more than 0 and at most 1: the weight of the newest round trip"},
		{&o.RetryMultiplier, 1, 100, "1 (equal waits) or more"},
		{&o.RetryJitter, 0, 1, "0..1"},
		{&o.MaxRequestsPerSecond, 0, 1e6, "0 (no cap) or more"},
		{&o.DeviceRequestsPerSecond, 0, 1e6, "0 (no cap) or more"},
		{&o.BreakerFailureRate, 0, 1, "0 (off) .. 1 (every poll failed)"},
	} {
		if p := *c.field; p != nil && (math.IsNaN(*p) || *p < c.min || *p > c.max) {
			return config.KeyErrorf(key(c.field), "%v: must be %s", *p, c.what)
		}
	}
	for _, c := range []struct {
		field **config.Duration
		min   time.Duration
	}{
		{&o.Timeout, time.Millisecond},
		{&o.TimeoutMax, time.Millisecond},
		{&o.TimeoutMin, time.Millisecond},
		{&o.BreakerCoolDown, time.Millisecond},
		{&o.BreakerWindow, 10 * time.Millisecond},
		{&o.ReconnectMin, time.Millisecond},
		{&o.ReconnectMax, time.Millisecond},
	} {
		if p := *c.field; p != nil && time.Duration(*p) < c.min {
			return config.KeyErrorf(key(c.field), "%s: must be at least %s", time.Duration(*p), c.min)
		}
	}
	return nil
}

// levels are the Options that apply to one device, most specific first (the device's, its
// profile's, the plugin's), with the key prefix of each (for messages).
type levels struct {
	opts     [3]*Options
	prefixes [3]string
}

// optionKeys are the TOML keys of Options' fields, by field index: read from the struct tags,
// so that a key is spelled once.
var optionKeys = func() []string {
	t := reflect.TypeFor[Options]()
	keys := make([]string, t.NumField())
	for i := range keys {
		keys[i] = t.Field(i).Tag.Get("toml")
	}
	return keys
}()

// fieldKey returns the TOML key of the field of o that field (a pointer into o) points to.
// It is for messages: it scans the fields.
func (o *Options) fieldKey(field any) string {
	v, p := reflect.ValueOf(o).Elem(), reflect.ValueOf(field).Pointer()
	for i := range optionKeys {
		if v.Field(i).Addr().Pointer() == p {
			return optionKeys[i]
		}
	}
	panic("modbus: not a field of Options")
}

// resolved is a device's Options merged over its levels and the defaults: every option set,
// from the most specific level that sets it, else from defaults (or derived, see defaults).
type resolved struct {
	Options
	from []string // by field index: the key that set it; "" when the default applied
}

// merge resolves lv over the defaults. timeout, the older name of timeout_max, counts as
// timeout_max at its level.
func (lv *levels) merge() *resolved {
	r := &resolved{Options: defaults, from: make([]string, len(optionKeys))}
	out := reflect.ValueOf(&r.Options).Elem()
	for i, key := range optionKeys {
		for k, o := range lv.opts {
			f := reflect.ValueOf(o).Elem().Field(i)
			if f.IsZero() {
				continue
			}
			out.Field(i).Set(f)
			r.from[i] = keyOf(lv.prefixes[k], key)
			break
		}
	}
	for k, o := range lv.opts { // timeout_max or timeout, at the most specific level with either
		if p := cmp.Or(o.TimeoutMax, o.Timeout); p != nil {
			r.TimeoutMax = p
			r.from[r.index(&r.TimeoutMax)] = keyOf(lv.prefixes[k], "timeout_max")
			break
		}
	}
	return r
}

// index returns the index of the field of r.Options that field points to.
func (r *resolved) index(field any) int {
	v, p := reflect.ValueOf(&r.Options).Elem(), reflect.ValueOf(field).Pointer()
	for i := range optionKeys {
		if v.Field(i).Addr().Pointer() == p {
			return i
		}
	}
	panic("modbus: not a field of Options")
}

// key returns the key that set the option field points to ("" when the default applied).
func (r *resolved) key(field any) string { return r.from[r.index(field)] }

// d is a duration option's value.
func d(p *config.Duration) time.Duration { return time.Duration(*p) }

// resolve merges the device's options over its profile's, the plugin's and the built-in
// defaults, and parses its controllers. A device that sets no option of its own resolves as
// every such device of its profile does: merged (when not nil) keeps that by profile, for
// Init (each merge allocates about 1 KB: 100 MB for 100,000 devices).
func (m *Modbus) resolve(dev *Device, prefix string, prof *Profile, profPrefix string, merged map[*Options]*resolved) (o deviceOptions, c0 controller, backups []controller, err error) {
	lv := &levels{opts: [3]*Options{&dev.Options, &prof.Options, &m.Options}, prefixes: [3]string{prefix, profPrefix, ""}}
	var r *resolved
	if merged != nil && dev.Options == (Options{}) {
		if r = merged[&prof.Options]; r == nil {
			r = lv.merge()
			merged[&prof.Options] = r
		}
	} else {
		r = lv.merge()
	}
	tmax := d(r.TimeoutMax)
	tmin := min(defaultTimeoutMin, tmax)
	if r.TimeoutMin != nil {
		tmin = d(r.TimeoutMin)
	}
	if tmin > tmax {
		key := cmp.Or(r.key(&r.TimeoutMin), r.key(&r.TimeoutMax))
		return o, c0, nil, config.KeyErrorf(key, "timeout_min %s is more than timeout_max %s (device %q)", tmin, tmax, dev.Name)
	}
	coolDown, rmin := d(r.BreakerCoolDown), d(r.ReconnectMin)
	// By default reconnects back off to at most half the breaker's cool-down, so that the
	// probe of a half-open breaker always dials instead of failing on the backoff.
	rmax := max(rmin, min(30*time.Second, coolDown/2))
	if r.ReconnectMax != nil {
		rmax = d(r.ReconnectMax)
	}
	if rmax < rmin {
		return o, c0, nil, config.KeyErrorf(r.key(&r.ReconnectMax), "%s is less than reconnect_min %s (device %q)", rmax, rmin, dev.Name)
	}
	wait := d(r.RetryWait)
	waitMax := max(wait, defaultRetryWaitMax)
	if r.RetryWaitMax != nil {
		waitMax = d(r.RetryWaitMax)
	}
	if waitMax < wait {
		return o, c0, nil, config.KeyErrorf(r.key(&r.RetryWaitMax), "%s is less than retry_wait %s (device %q)", waitMax, wait, dev.Name)
	}
	failures := *r.BreakerFailures
	if failures == 0 {
		failures = *defaults.BreakerFailures // 0 has always meant the default
	}
	o = deviceOptions{
		timeout: resilience.TimeoutConfig{Max: tmax, Min: tmin, Factor: *r.TimeoutFactor, Jitter: d(r.TimeoutJitter), Alpha: *r.RTTAlpha},
		retry: resilience.RetryConfig{Retries: *r.Retries, Initial: wait, Max: waitMax, Multiplier: *r.RetryMultiplier,
			Jitter: *r.RetryJitter},
		link: linkOptions{keepAlive: d(r.KeepAlive), idleTimeout: d(r.IdleTimeout), reconnectMin: rmin, reconnectMax: rmax,
			rate: *r.MaxRequestsPerSecond, burst: *r.MaxRequestsBurst},
		deviceRate:  *r.DeviceRequestsPerSecond,
		deviceBurst: *r.DeviceRequestsBurst,
		breaker: breakerOptions{failures: failures, rate: *r.BreakerFailureRate, minRequests: *r.BreakerMinRequests,
			window: d(r.BreakerWindow), coolDown: coolDown, probes: *r.BreakerProbes},
		splitReads:       *r.SplitFailingReads,
		staleAfter:       d(r.StaleAfter),
		health:           *r.HealthMetric,
		pauseAfterConn:   d(r.PauseAfterConnect),
		pauseBetween:     d(r.PauseBetweenRequests),
		closeAfterGather: *r.CloseAfterGather,
		busyRetries:      *r.BusyRetries,
		busyWait:         d(r.BusyRetriesWait),
		plan: planOptions{maxGap: *r.MaxGap, maxRegisters: *r.MaxRequestRegisters, maxBits: *r.MaxRequestBits,
			onePerField: *r.OneRequestPerField, coilsFromZero: *r.ReadCoilsFromZero},
	}
	mode := ""
	modeKey := ""
	for k, lo := range lv.opts {
		if lo.TransmissionMode != "" {
			mode, modeKey = strings.ToLower(lo.TransmissionMode), keyOf(lv.prefixes[k], "transmission_mode")
			break
		}
	}
	parse := func(url, key string, j int) (controller, error) {
		t, err := parseController(url, mode)
		if err != nil {
			switch {
			case strings.HasPrefix(err.Error(), "transmission_mode"):
				key = cmp.Or(modeKey, "transmission_mode")
			case j < 0:
				key = keyOf(prefix, "controller") // made here: most devices have no mistake
			}
			return t, config.KeyErrorf(key, "%v", err)
		}
		return t, nil
	}
	if c0, err = parse(dev.Controller, "", -1); err != nil {
		return o, c0, nil, err
	}
	if len(dev.BackupControllers) == 0 {
		return o, c0, nil, nil
	}
	seen := map[string]bool{c0.String(): true}
	for j, u := range dev.BackupControllers {
		key := fmt.Sprintf("%s.backup_controllers[%d]", prefix, j)
		bt, err := parse(u, key, j)
		if err != nil {
			return o, c0, nil, err
		}
		if seen[bt.String()] {
			return o, c0, nil, config.KeyErrorf(key, "%s is already a controller of device %q", bt, dev.Name)
		}
		seen[bt.String()] = true
		backups = append(backups, bt)
	}
	return o, c0, backups, nil
}

// linkKeys are the connection settings: their value in linkOptions and their field in Options.
var linkKeys = []struct {
	value func(*linkOptions) any
	field func(*Options) any // a pointer to the field
}{
	{func(l *linkOptions) any { return l.keepAlive }, func(o *Options) any { return &o.KeepAlive }},
	{func(l *linkOptions) any { return l.idleTimeout }, func(o *Options) any { return &o.IdleTimeout }},
	{func(l *linkOptions) any { return l.reconnectMin }, func(o *Options) any { return &o.ReconnectMin }},
	{func(l *linkOptions) any { return l.reconnectMax }, func(o *Options) any { return &o.ReconnectMax }},
	{func(l *linkOptions) any { return l.rate }, func(o *Options) any { return &o.MaxRequestsPerSecond }},
	{func(l *linkOptions) any { return l.burst }, func(o *Options) any { return &o.MaxRequestsBurst }},
}

// linkConflict describes how b (a device's connection settings) differs from a (those of the
// connection's first device), and returns the key to blame: the first differing setting where
// the device or its profile sets it, else fallback.
func linkConflict(a, b *linkOptions, lv *levels, fallback string) (key, diff string) {
	var out []string
	for _, k := range linkKeys {
		x, y := k.value(a), k.value(b)
		if x == y {
			continue
		}
		name := lv.opts[0].fieldKey(k.field(lv.opts[0]))
		out = append(out, fmt.Sprintf("%s %v, not %v", name, x, y))
		if key == "" {
			for i, o := range lv.opts[:2] {
				if !reflect.ValueOf(k.field(o)).Elem().IsNil() {
					key = keyOf(lv.prefixes[i], name)
					break
				}
			}
		}
	}
	return cmp.Or(key, fallback), strings.Join(out, ", ")
}

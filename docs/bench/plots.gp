# Written by shmdict_peers: run `gnuplot plots.gp` in this directory to redraw.
set datafile missing "-"

# ---- throughput (png)
reset
set datafile missing "-"
if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
  set terminal pngcairo size 1200,560 noenhanced font "sans,10"
} else {
  set terminal png size 1200,560 noenhanced
}
set output "throughput.png"
set title "Throughput per workload (higher is better; log scale)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.9 border -1
set boxwidth 0.9
set logscale y
set yrange [1:*]
set grid ytics
set ylabel "operations per second"
set xtics rotate by -20 left
set key outside right top vertical
set bmargin 6
plot "throughput.dat" using 2:xtic(1) title "shmdict", \
     "throughput.dat" using 3 title "unordered_map", \
     "throughput.dat" using 4 title "lmdb", \
     "throughput.dat" using 5 title "boost_interprocess", \
     "throughput.dat" using 6 title "redis", \
     "throughput.dat" using 7 title "python_manager"
unset output

# ---- latency_read (png)
reset
set datafile missing "-"
if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
  set terminal pngcairo size 900,560 noenhanced font "sans,10"
} else {
  set terminal png size 900,560 noenhanced
}
set output "latency_read.png"
set title "read hit: latency per operation (CDF)"
set logscale x
set grid xtics ytics mxtics
set xlabel "latency (us, log scale)"
set ylabel "operations at or below (%)"
set yrange [0:100]
set key bottom right
plot "latency_read.dat" using 2:1 with lines lw 2 title "shmdict", \
     "latency_read.dat" using 3:1 with lines lw 2 title "unordered_map", \
     "latency_read.dat" using 4:1 with lines lw 2 title "lmdb", \
     "latency_read.dat" using 5:1 with lines lw 2 title "boost_interprocess", \
     "latency_read.dat" using 6:1 with lines lw 2 title "redis", \
     "latency_read.dat" using 7:1 with lines lw 2 title "python_manager"
unset output

# ---- latency_write (png)
reset
set datafile missing "-"
if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
  set terminal pngcairo size 900,560 noenhanced font "sans,10"
} else {
  set terminal png size 900,560 noenhanced
}
set output "latency_write.png"
set title "write (overwrite): latency per operation (CDF)"
set logscale x
set grid xtics ytics mxtics
set xlabel "latency (us, log scale)"
set ylabel "operations at or below (%)"
set yrange [0:100]
set key bottom right
plot "latency_write.dat" using 2:1 with lines lw 2 title "shmdict", \
     "latency_write.dat" using 3:1 with lines lw 2 title "unordered_map", \
     "latency_write.dat" using 4:1 with lines lw 2 title "lmdb", \
     "latency_write.dat" using 5:1 with lines lw 2 title "boost_interprocess", \
     "latency_write.dat" using 6:1 with lines lw 2 title "redis", \
     "latency_write.dat" using 7:1 with lines lw 2 title "python_manager"
unset output

# ---- latency_change (png)
reset
set datafile missing "-"
if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
  set terminal pngcairo size 900,560 noenhanced font "sans,10"
} else {
  set terminal png size 900,560 noenhanced
}
set output "latency_change.png"
set title "change visible in another process (CDF)"
set logscale x
set grid xtics ytics mxtics
set xlabel "latency (us, log scale)"
set ylabel "operations at or below (%)"
set yrange [0:100]
set key bottom right
plot "latency_change.dat" using 2:1 with lines lw 2 title "shmdict (polling)", \
     "latency_change.dat" using 3:1 with lines lw 2 title "lmdb (polling)", \
     "latency_change.dat" using 4:1 with lines lw 2 title "boost_interprocess (polling)", \
     "latency_change.dat" using 5:1 with lines lw 2 title "redis (polling)", \
     "latency_change.dat" using 6:1 with lines lw 2 title "shmdict (blocking)", \
     "latency_change.dat" using 7:1 with lines lw 2 title "redis (blocking)"
unset output

# ---- throughput (svg)
reset
set datafile missing "-"
set terminal svg size 1200,560 dynamic noenhanced background "white"
set output "throughput.svg"
set title "Throughput per workload (higher is better; log scale)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.9 border -1
set boxwidth 0.9
set logscale y
set yrange [1:*]
set grid ytics
set ylabel "operations per second"
set xtics rotate by -20 left
set key outside right top vertical
set bmargin 6
plot "throughput.dat" using 2:xtic(1) title "shmdict", \
     "throughput.dat" using 3 title "unordered_map", \
     "throughput.dat" using 4 title "lmdb", \
     "throughput.dat" using 5 title "boost_interprocess", \
     "throughput.dat" using 6 title "redis", \
     "throughput.dat" using 7 title "python_manager"
unset output

# ---- latency_read (svg)
reset
set datafile missing "-"
set terminal svg size 900,560 dynamic noenhanced background "white"
set output "latency_read.svg"
set title "read hit: latency per operation (CDF)"
set logscale x
set grid xtics ytics mxtics
set xlabel "latency (us, log scale)"
set ylabel "operations at or below (%)"
set yrange [0:100]
set key bottom right
plot "latency_read.dat" using 2:1 with lines lw 2 title "shmdict", \
     "latency_read.dat" using 3:1 with lines lw 2 title "unordered_map", \
     "latency_read.dat" using 4:1 with lines lw 2 title "lmdb", \
     "latency_read.dat" using 5:1 with lines lw 2 title "boost_interprocess", \
     "latency_read.dat" using 6:1 with lines lw 2 title "redis", \
     "latency_read.dat" using 7:1 with lines lw 2 title "python_manager"
unset output

# ---- latency_write (svg)
reset
set datafile missing "-"
set terminal svg size 900,560 dynamic noenhanced background "white"
set output "latency_write.svg"
set title "write (overwrite): latency per operation (CDF)"
set logscale x
set grid xtics ytics mxtics
set xlabel "latency (us, log scale)"
set ylabel "operations at or below (%)"
set yrange [0:100]
set key bottom right
plot "latency_write.dat" using 2:1 with lines lw 2 title "shmdict", \
     "latency_write.dat" using 3:1 with lines lw 2 title "unordered_map", \
     "latency_write.dat" using 4:1 with lines lw 2 title "lmdb", \
     "latency_write.dat" using 5:1 with lines lw 2 title "boost_interprocess", \
     "latency_write.dat" using 6:1 with lines lw 2 title "redis", \
     "latency_write.dat" using 7:1 with lines lw 2 title "python_manager"
unset output

# ---- latency_change (svg)
reset
set datafile missing "-"
set terminal svg size 900,560 dynamic noenhanced background "white"
set output "latency_change.svg"
set title "change visible in another process (CDF)"
set logscale x
set grid xtics ytics mxtics
set xlabel "latency (us, log scale)"
set ylabel "operations at or below (%)"
set yrange [0:100]
set key bottom right
plot "latency_change.dat" using 2:1 with lines lw 2 title "shmdict (polling)", \
     "latency_change.dat" using 3:1 with lines lw 2 title "lmdb (polling)", \
     "latency_change.dat" using 4:1 with lines lw 2 title "boost_interprocess (polling)", \
     "latency_change.dat" using 5:1 with lines lw 2 title "redis (polling)", \
     "latency_change.dat" using 6:1 with lines lw 2 title "shmdict (blocking)", \
     "latency_change.dat" using 7:1 with lines lw 2 title "redis (blocking)"
unset output
